from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidseq import viz
from vidseq.errors import InputShapeError

SIZES = [(160, 120), (640, 480), (1920, 1080)]


def blank(size: tuple[int, int], value: int = 100) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), value, np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of pixels that differ."""
    return (a != b).any(axis=2)


@pytest.mark.parametrize("size", SIZES)
def test_draw_tracks_draws_boxes_where_the_objects_are(size: tuple[int, int]) -> None:
    w, h = size
    img = blank(size)
    box = [w * 0.3, h * 0.3, w * 0.6, h * 0.8]
    out = viz.draw_tracks(img, [(7, "person", box, 0.9)])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 100).all()  # input untouched (copy=True)
    diff = changed(img, out)
    x0, y0, x1, y1 = (int(v) for v in box)
    ym = (y0 + y1) // 2
    assert diff[ym, x0 - 1:x0 + 2].any() and diff[ym, x1 - 1:x1 + 2].any()  # left/right edges drawn
    assert not diff[ym, (x0 + x1) // 2]  # box interior untouched
    assert not diff[h - 3:, :].any()  # nothing far below the box
    # the id tag sits above the box's top-left corner
    assert diff[max(0, y0 - 5), x0:x0 + 10].any()


def test_track_colours_are_stable_and_distinct() -> None:
    assert viz.color_for_id(3) == viz.color_for_id(3)
    assert viz.color_for_id("abc") == viz.color_for_id("abc")
    colours = {viz.color_for_id(i) for i in range(20)}
    assert len(colours) == 20
    img = blank((200, 100), 0)
    out = viz.draw_tracks(img, [(1, None, [10, 10, 60, 60], None), (2, None, [110, 10, 160, 60], None)])
    # both boxes' left edges, at mid height (below the tag), carry their id colours
    assert tuple(int(c) for c in out[40, 10]) == viz.color_for_id(1)
    assert tuple(int(c) for c in out[40, 110]) == viz.color_for_id(2)


def test_draw_tracks_in_place_and_bad_input() -> None:
    img = blank((100, 80))
    out = viz.draw_tracks(img, [(1, "car", [5, 5, 50, 50], 0.5)], copy=False)
    assert out is img and (img != 100).any()
    tracks = [(1, "car", [np.nan, 5, 50, 50], 0.5), (None, None, [0, 0, 500, 500], None)]
    out = viz.draw_tracks(blank((100, 80)), tracks)
    assert out.shape == (80, 100, 3)  # NaN box skipped, out-of-image box clipped
    with pytest.raises(InputShapeError):
        viz.draw_tracks(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(InputShapeError):
        viz.draw_tracks(np.zeros((10, 10, 3), np.float32), [])


@pytest.mark.parametrize("size", SIZES)
def test_draw_paths_history_and_forecast(size: tuple[int, int]) -> None:
    w, h = size
    img = blank(size, 0)
    hist = np.stack([np.linspace(0.1 * w, 0.4 * w, 10), np.full(10, 0.5 * h)], axis=1)  # (T, 2)
    fc = np.stack([np.linspace(0.45 * w, 0.8 * w, 8), np.full(8, 0.5 * h)], axis=1)
    out = viz.draw_paths(img, hist, fc)
    assert out.shape == img.shape and out.dtype == np.uint8
    row = changed(img, out)[int(0.5 * h)]
    assert row[int(0.2 * w)] and row[int(0.35 * w)]  # history drawn
    # forecast is dashed: strongly drawn pixels with gaps (anti-aliasing aside) along its span
    bright = out.max(axis=2) > 128
    span = bright[int(0.5 * h) - 3:int(0.5 * h) + 4, int(0.5 * w):int(0.75 * w)].any(axis=0)
    assert span.any() and not span.all()
    assert not changed(img, out)[int(0.1 * h)].any()  # far from the path: untouched


def test_draw_paths_best_mode_is_highlighted() -> None:
    img = blank((400, 300), 0)
    hist = np.array([[50.0, 150.0], [100.0, 150.0]])
    up = np.stack([np.linspace(110, 300, 10), np.linspace(140, 50, 10)], axis=1)
    down = np.stack([np.linspace(110, 300, 10), np.linspace(160, 250, 10)], axis=1)
    fc = np.stack([up, down])  # (K=2, T, 2)
    out = viz.draw_paths(img, hist, fc, mode_probs=[0.2, 0.8])
    # best mode (down) in the bright forecast colour, the other in the dim one
    best_px = (out == viz.FORECAST_COLOR).all(axis=2)
    alt_px = (out == viz.FORECAST_ALT_COLOR).all(axis=2)
    assert best_px[160:, :].sum() > best_px[:140, :].sum()
    assert alt_px[:140, :].sum() > alt_px[160:, :].sum()
    out2 = viz.draw_paths(img, hist, fc, best_mode=0)
    assert (out2 == viz.FORECAST_COLOR).all(axis=2)[:140].sum() > (out2 == viz.FORECAST_COLOR).all(axis=2)[160:].sum()


def test_draw_paths_tolerates_nan_and_rejects_bad_shapes() -> None:
    img = blank((100, 100))
    hist = np.array([[10, 10], [np.nan, np.nan], [30, 30]], dtype=float)
    assert viz.draw_paths(img, hist, None).shape == img.shape
    assert viz.draw_paths(img, None, np.array([[10.0, 10.0], [20.0, 20.0]])).shape == img.shape
    with pytest.raises(InputShapeError):
        viz.draw_paths(img, hist, np.zeros((2, 3, 4, 2)))
    with pytest.raises(InputShapeError):
        viz.draw_paths(img, hist, np.zeros((2, 3, 2)), mode_probs=[1.0])


@pytest.mark.parametrize("size", SIZES)
def test_score_bar_at_bottom_with_threshold_and_colour(size: tuple[int, int]) -> None:
    w, h = size
    img = blank(size, 0)
    normal = viz.draw_score_bar(img, 0.2, 0.5, False, history=np.linspace(0, 1, 50))
    anomalous = viz.draw_score_bar(img, 0.9, 0.5, True)
    strip = viz.score_bar_height(img)
    assert normal.shape == img.shape and normal.dtype == np.uint8
    d = changed(img, normal)
    assert d[h - strip:].any() and not d[: h - strip - 1].any()  # only the bottom strip changes
    bar_y = h - viz.Style.for_image(img).margin - 2
    green = (normal[bar_y] == viz.GREEN).all(axis=1)
    # score 0.2 of vmax 1.0 (2 x threshold) fills ~20% of the bar width
    assert green.sum() == pytest.approx(0.2 * w, rel=0.2)
    red = (anomalous[bar_y] == viz.RED).all(axis=1)
    assert red.sum() > 0.8 * w
    assert (anomalous[h // 2, 0] == viz.RED).all()  # anomalous frames get a red border
    assert not (normal[h // 2, 0] == viz.RED).all()


def test_score_bar_without_score() -> None:
    img = blank((160, 120), 0)
    out = viz.draw_score_bar(img, None, 0.5, False, history=[np.nan, np.nan, 0.2])
    assert not (out[116] == viz.GREEN).all(axis=1).any()  # nothing filled while warming up


@pytest.mark.parametrize("size", SIZES)
def test_caption_and_status(size: tuple[int, int]) -> None:
    w, h = size
    img = blank(size, 200)
    cap = viz.draw_caption(img, "a person walks from the left to the right while a cyclist crosses the lawn " * 3)
    d = changed(img, cap)
    assert d.any() and not d[: h // 2].any()  # bottom caption, above the score bar
    assert not d[h - viz.score_bar_height(img) + 1:].any()
    top = viz.draw_caption(img, "hello", position="top")
    assert changed(img, top)[: h // 4].any() and not changed(img, top)[h // 2:].any()
    assert viz.draw_caption(img, "  ") is not img and (viz.draw_caption(img, "") == img).all()

    st = viz.draw_status(img, ["fps 12.3  lag 0.08 s", "drops 3", "learning normality: 12/30 s"])
    d = changed(img, st)
    assert d[: h // 3, : w // 2].any() and not d[h // 2:].any()
    st2 = viz.draw_status(img, {"fps": 12.345, "drops": 3}, corner="bottom-right")
    d2 = changed(img, st2)
    assert d2[h // 2:, w // 2:].any() and not d2[: h // 2].any()


def test_non_ascii_caption() -> None:
    out = viz.draw_caption(blank((320, 240)), "café — naïve")
    assert out.shape == (240, 320, 3)


def test_upscale_for_overlay() -> None:
    small = blank((160, 120))
    big, scale = viz.upscale_for_overlay(small, 360)
    assert scale == 3.0 and big.shape == (360, 480, 3)
    same, scale = viz.upscale_for_overlay(blank((640, 480)), 360)
    assert scale == 1.0 and same.shape == (480, 640, 3)


def test_plot_anomaly_timeline_writes_png(tmp_path: Path) -> None:
    t = np.arange(200) / 10.0
    scores = np.r_[np.full(10, np.nan), 0.3 + 0.3 * np.sin(np.arange(190) / 15)]
    events = [(2.0, 4.0, 3.1), {"start_s": 12.0, "end_s": 13.5}]
    path = viz.plot_anomaly_timeline(tmp_path / "sub" / "anomaly.png", t, scores, 0.5, events, "clip01",
                                     ground_truth=(t > 3) & (t < 5))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    img = cv2.imread(str(path))
    assert img is not None and img.shape == (320, 1000, 3)
    # the red event shading and the orange threshold line are in the picture
    b, g, r = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
    assert ((r > 200) & (g < 220) & (b < 220) & (r - b > 20)).sum() > 1000
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["anomaly.png"]  # no temp files left


def test_plot_timeline_event_objects_and_errors(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Event:
        start_s: float
        end_s: float
        peak_s: float

    viz.plot_anomaly_timeline(tmp_path / "a.png", [0, 1, 2], [0.1, 0.9, 0.1], None, [Event(0.5, 1.5, 1.0)])
    assert (tmp_path / "a.png").stat().st_size > 1000
    viz.plot_anomaly_timeline(tmp_path / "empty.png", [], [], 0.5)
    with pytest.raises(InputShapeError):
        viz.plot_anomaly_timeline(tmp_path / "b.png", [0, 1], [0.1], 0.5)

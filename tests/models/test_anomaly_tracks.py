"""The ``tracks`` anomaly stream on generated region sequences (arrays in, arrays out)."""

from __future__ import annotations

import numpy as np
import pytest

from vidseq.errors import ConfigError
from vidseq.features.regions import ATTRIBUTE_NAMES
from vidseq.models.anomaly.tracks import (
    FITTED_MIN_COVER,
    RegionTracker,
    TrackStream,
    TrackStreamConfig,
    score_observations,
    track_clip,
)

FPS = 10.0
SIZE = (360, 240)
H = 30.0  # walker height (px)


def region(x: float, y: float, vx: float, vy: float, h: float = H) -> np.ndarray:
    a = np.zeros(len(ATTRIBUTE_NAMES))
    a[ATTRIBUTE_NAMES.index("vx")], a[ATTRIBUTE_NAMES.index("vy")] = vx, vy
    a[ATTRIBUTE_NAMES.index("height")], a[ATTRIBUTE_NAMES.index("width")] = h, h / 3
    a[ATTRIBUTE_NAMES.index("sqrt_area")] = h / 2
    a[ATTRIBUTE_NAMES.index("y_bottom")], a[ATTRIBUTE_NAMES.index("x_center")] = y, x
    a[ATTRIBUTE_NAMES.index("speed_median")] = np.hypot(vx, vy)
    return a


def walkers(seconds: float, paths: list[tuple[float, float, float, float, float]], rng: np.random.Generator,
            noise_blobs: int = 0) -> list[tuple[np.ndarray, float, bool]]:
    """Frames of walkers ``(t_start, x0, y0, ux, uy)`` (unit direction, 0.8 heights/s) plus flickering blobs."""
    v = 0.8 * H / FPS  # px per frame
    frames = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        rows = []
        for t0, x0, y0, ux, uy in paths:
            if t < t0:
                continue
            k = (t - t0) * FPS
            x, y = x0 + ux * v * k + rng.normal(0, 0.5), y0 + uy * v * k + rng.normal(0, 0.5)
            if 0 <= x < SIZE[0] and H <= y < SIZE[1]:
                rows.append(region(x, y, ux * v + rng.normal(0, 0.2), uy * v + rng.normal(0, 0.2)))
        for _ in range(noise_blobs):  # a sensor-noise blob: anywhere, one frame, flow every way
            rows.append(region(rng.uniform(0, SIZE[0]), rng.uniform(20, SIZE[1]), rng.normal(0, 1), rng.normal(0, 1),
                               h=rng.uniform(5, 12)))
        frames.append((np.array(rows).reshape(-1, len(ATTRIBUTE_NAMES)), t, True))
    return frames


def lane_traffic(seconds: float, rng: np.random.Generator) -> list[tuple[float, float, float, float, float]]:
    """Walkers along a horizontal path (foot rows 150-175), both ways, a new one every ~1.5 s."""
    out = []
    for t0 in np.arange(0, seconds, 1.5):
        right = rng.random() < 0.5
        out.append((float(t0 + rng.uniform(0, 1)), 0.0 if right else SIZE[0] - 1.0, float(rng.uniform(150, 175)),
                    1.0 if right else -1.0, 0.0))
    return out


@pytest.fixture(scope="module")
def fitted() -> TrackStream:
    rng = np.random.default_rng(0)
    cfg = TrackStreamConfig()
    obs = track_clip(cfg, SIZE, FPS, walkers(120.0, lane_traffic(120.0, rng), rng, noise_blobs=3))
    stream = TrackStream(cfg, SIZE)
    stream.fit(obs)
    return stream


def test_one_walker_keeps_one_track_and_a_scene_cut_ends_it() -> None:
    rng = np.random.default_rng(1)
    tracker = RegionTracker(TrackStreamConfig(), SIZE, FPS)
    frames = walkers(4.0, [(0.0, 20.0, 160.0, 1.0, 0.0)], rng)
    steps = [tracker.step(a, t, v) for a, t, v in frames]
    ids = {int(o[0, 0]) for o in steps}
    assert len(ids) == 1
    obs = steps[-1]
    assert obs[0, 1] == pytest.approx(3.9)  # age in seconds
    assert obs[0, 4] == pytest.approx(0.8, rel=0.25)  # body heights per second
    assert abs(obs[0, 2]) < 0.3  # heading: to the right
    after_cut = tracker.step(frames[-1][0], 4.2, False)
    assert after_cut[0, 1] == 0.0 and int(after_cut[0, 0]) not in ids


@pytest.mark.parametrize(("name", "path"), [("against the path's directions", (2.0, 200.0, 235.0, 0.0, -1.0)),
                                            ("where nobody walks", (2.0, 0.0, 70.0, 1.0, 0.0))])
def test_a_walker_off_the_path_or_crossing_it_scores_far_above_normal_walkers(fitted: TrackStream, name: str,
                                                                            path: tuple) -> None:
    rng = np.random.default_rng(2)
    normal = score_observations(fitted, FPS, walkers(30.0, lane_traffic(30.0, rng), rng, noise_blobs=3))
    rng = np.random.default_rng(2)
    frames = walkers(30.0, lane_traffic(30.0, rng), rng, noise_blobs=3)
    odd = walkers(30.0, [path], np.random.default_rng(3))
    mixed = [(np.concatenate([a, b[0]]), t, True) for (a, t, _), b in zip(frames, odd, strict=True)]
    scores = score_observations(fitted, FPS, mixed)
    assert normal.max() > 0  # normal walkers are tracked and scored
    assert scores.max() > 2.0 * normal.max(), f"{name}: {scores.max():.2f} vs normal {normal.max():.2f}"


def swaying(frames: list[tuple[np.ndarray, float, bool]], xs: list[float], y: float,
            rng: np.random.Generator) -> list[tuple[np.ndarray, float, bool]]:
    """The same frames plus regions that never leave ``(x, y)`` but move every way (bushes in the wind along a
    fence, a flickering light): the tracker follows each in place, every frame."""
    return [(np.concatenate([a] + [region(x + rng.normal(0, 1), y + rng.normal(0, 1), rng.normal(0, 1.5),
                                          rng.normal(0, 1.5), h=20.0)[None] for x in xs]), t, v)
            for a, t, v in frames]


def test_a_place_where_only_bushes_sway_is_still_a_place_nobody_walks() -> None:
    """Occupancy counts moving objects (by motion weight): regions tracked in place all through the normal
    video, with flow every way, do not teach that walking there is normal."""
    bushes = [60.0, 100.0, 140.0, 180.0]
    rng = np.random.default_rng(0)
    cfg = TrackStreamConfig()
    stream = TrackStream(cfg, SIZE)
    stream.fit(track_clip(cfg, SIZE, FPS, swaying(walkers(120.0, lane_traffic(120.0, rng), rng), bushes, 70.0,
                                                  np.random.default_rng(1))))
    rng = np.random.default_rng(2)
    frames = swaying(walkers(30.0, lane_traffic(30.0, rng), rng), bushes, 70.0, np.random.default_rng(3))
    normal = score_observations(stream, FPS, frames)
    along = walkers(30.0, [(2.0, 50.0, 72.0, 1.0, 0.0)], np.random.default_rng(4))
    along = [(b if t < 7.0 else b[:0], t, v) for b, t, v in along]  # 5 s along the bushes, then gone
    scores = score_observations(stream, FPS, [(np.concatenate([a, b]), t, True)
                                              for (a, t, _), (b, _, _) in zip(frames, along, strict=True)])
    assert normal.max() > 0
    # counting every observation, the bushes make their band as walked as the lane: the walker scores 1.0x
    assert scores.max() > 1.5 * normal.max(), f"{scores.max():.2f} vs normal {normal.max():.2f}"


def test_flickering_noise_never_scores(fitted: TrackStream) -> None:
    """Blobs that live one frame, anywhere, never become tracks old enough to score."""
    rng = np.random.default_rng(4)
    frames = walkers(20.0, [], rng, noise_blobs=6)
    assert score_observations(fitted, FPS, frames).max() == 0.0


def test_an_unfitted_stream_and_empty_frames_score_zero() -> None:
    stream = TrackStream(TrackStreamConfig(), SIZE)
    stream.fit(np.zeros((0, 7)))
    empty = [(np.zeros((0, len(ATTRIBUTE_NAMES))), i / FPS, True) for i in range(20)]
    assert score_observations(stream, FPS, empty).tolist() == [0.0] * 20


@pytest.mark.parametrize("bad", [{"grid": (0, 4)}, {"bins": 1}, {"window_s": 0}, {"min_cover": 1.5},
                                 {"uniform": 0}, {"prior": 0}, {"accumulate": 0},
                                 {"accumulate": float("inf")}])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError, match="tracks"):
        TrackStreamConfig(**bad)


def test_a_live_source_that_drops_frames_keeps_its_tracks_weight() -> None:
    """Cover counts the frames the tracker was given: with every other frame dropped (a latest-frame reader
    behind a slow pass) a walker's track keeps its full motion weight, as with every frame."""
    rng = np.random.default_rng(7)
    frames = walkers(6.0, [(0.0, 20.0, 160.0, 1.0, 0.0)], rng)
    cfg = TrackStreamConfig()
    every = track_clip(cfg, SIZE, FPS, frames)
    halved = track_clip(cfg, SIZE, FPS, frames[::2])
    assert every[-1, 3] > 0.5
    assert halved[-1, 3] > 0.5, "a track seen in every frame it was given lost its weight"


def badly_measured(frames: list[tuple[np.ndarray, float, bool]], rng: np.random.Generator,
                   share: float) -> list[tuple[np.ndarray, float, bool]]:
    """The same walker, but in ``share`` of its frames its region's flow points every way (it passes another
    walker and their regions merge, its region is half missed): those frames carry no motion weight."""
    out = []
    for a, t, v in frames:
        a = a.copy()
        if len(a) and rng.random() < share:
            a[:, ATTRIBUTE_NAMES.index("vx")] = rng.normal(0, 2, len(a))
            a[:, ATTRIBUTE_NAMES.index("vy")] = rng.normal(0, 2, len(a))
        out.append((a, t, v))
    return out


def test_a_wrong_way_walker_measured_badly_half_the_way_still_stands_out() -> None:
    """Accumulated evidence (``accumulate``, the default) adds up what a walker against the traffic shows in the
    frames where its track is measured well; a mean over the last 1.5 s alone lets the other frames dilute it.
    Ordinary walkers add nothing: their scores are the same either way."""
    ratio, normal_max = {}, {}
    for accumulate in (2.0, None):
        rng = np.random.default_rng(0)
        cfg = TrackStreamConfig(accumulate=accumulate)
        stream = TrackStream(cfg, SIZE)
        stream.fit(track_clip(cfg, SIZE, FPS, walkers(120.0, lane_traffic(120.0, rng), rng, noise_blobs=3)))
        normal = score_observations(stream, FPS, walkers(60.0, lane_traffic(60.0, np.random.default_rng(2)),
                                                         np.random.default_rng(2), noise_blobs=3))
        up = badly_measured(walkers(7.0, [(0.0, 200.0, 235.0, 0.0, -1.0)], np.random.default_rng(3)),
                            np.random.default_rng(4), share=0.5)
        ratio[accumulate], normal_max[accumulate] = score_observations(stream, FPS, up).max() / normal.max(), \
            normal.max()
    assert normal_max[2.0] == pytest.approx(normal_max[None], rel=0.1)
    assert ratio[None] < 5.0, f"the windowed mean alone separates it already ({ratio[None]:.1f}x): shows nothing"
    assert ratio[2.0] > 10.0, f"accumulated: the wrong-way walker scores only {ratio[2.0]:.1f}x normal walkers"


def test_a_live_source_that_drops_every_other_frame_adds_up_evidence_as_fast_per_second() -> None:
    """The accumulated excess is in stream time: a wrong-way walker scored on every other frame (a latest-frame
    reader behind a pass at half the camera's rate) reaches about the score it reaches with every frame; counted
    per frame scored, it would reach about half."""
    rng = np.random.default_rng(0)
    cfg = TrackStreamConfig(accumulate=2.0)
    stream = TrackStream(cfg, SIZE)
    stream.fit(track_clip(cfg, SIZE, FPS, walkers(120.0, lane_traffic(120.0, rng), rng, noise_blobs=3)))
    up = walkers(7.0, [(0.0, 200.0, 235.0, 0.0, -1.0)], np.random.default_rng(3))
    every = score_observations(stream, FPS, up)
    halved = score_observations(stream, FPS, up[::2])
    assert every.max() > 20.0, f"the walker accumulates only {every.max():.1f} with every frame"
    assert halved.max() == pytest.approx(every.max(), rel=0.15)


def half_found(frames: list[tuple[np.ndarray, float, bool]], keep: int, every: int,
               ) -> list[tuple[np.ndarray, float, bool]]:
    """The same scene, but the walker's region (the last row) is found in only ``keep`` of every ``every``
    frames: a small walker far from the camera, whose flow region falls under the detector's smallest size."""
    return [(a if i % every < keep else a[:-1], t, v) for i, (a, t, v) in enumerate(frames)]


def test_unsupervised_scoring_weighs_a_walker_whose_region_is_found_in_half_its_frames() -> None:
    """``tracks.min_cover``: a wrong-way walker found in 2 of every 4 frames is a track covering 55-60 % of its
    window. The fitted default (0.7) weighs it nothing; unsupervised scoring (0.5) sees it far above the
    normal walkers, which score about the same under both."""
    from vidseq.models.anomaly.model import AnomalyConfig
    from vidseq.tasks.anomaly.online import UNSUPERVISED_TRACK_MIN_COVER, unsupervised_config

    assert unsupervised_config().tracks.min_cover == UNSUPERVISED_TRACK_MIN_COVER < FITTED_MIN_COVER
    asked = AnomalyConfig(streams=("speed", "tracks"), tracks=TrackStreamConfig(min_cover=FITTED_MIN_COVER))
    assert unsupervised_config(base=asked).tracks.min_cover == FITTED_MIN_COVER  # a value given is kept
    rng = np.random.default_rng(0)
    train = walkers(120.0, lane_traffic(120.0, rng), rng, noise_blobs=3)
    normal_frames = walkers(60.0, lane_traffic(60.0, np.random.default_rng(2)), np.random.default_rng(2))
    # the walker goes up the image from the lane's foot rows, through the traffic, for 6 s
    scene = walkers(8.0, lane_traffic(8.0, np.random.default_rng(5)) + [(1.0, 200.0, 235.0, 0.0, -1.0)],
                    np.random.default_rng(3))
    up = half_found(scene, keep=2, every=4)
    ratio, normal_max = {}, {}
    for name, cfg in (("fitted", TrackStreamConfig(accumulate=2.0)), ("unsupervised", unsupervised_config().tracks)):
        stream = TrackStream(cfg, SIZE)
        stream.fit(track_clip(cfg, SIZE, FPS, train))
        normal_max[name] = score_observations(stream, FPS, normal_frames).max()
        ratio[name] = score_observations(stream, FPS, up).max() / normal_max[name]
    assert normal_max["unsupervised"] == pytest.approx(normal_max["fitted"], rel=0.25)
    assert ratio["fitted"] < 2.0, f"min_cover 0.7 weighs the walker already ({ratio['fitted']:.1f}x): shows nothing"
    assert ratio["unsupervised"] > 5.0, f"the walker found in half its frames scores {ratio['unsupervised']:.1f}x"

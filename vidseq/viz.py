"""Overlays and plots: frame in, frame out.

Every ``draw_*`` function takes a BGR uint8 ``(H, W, 3)`` image and returns one of the same shape and
dtype (a copy unless ``copy=False``, then the input is drawn on and returned). Sizes of text, lines
and bars scale with the image, so overlays stay readable from 160x120 up to 1920x1080. OpenCV's
Hershey fonts only draw ASCII; other characters are shown as ``?``.

:func:`plot_anomaly_timeline` draws a score curve with threshold and events to a PNG (matplotlib,
Agg canvas, no pyplot global state) written atomically.
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import InputShapeError
from vidseq.io import atomic_path

log = logging.getLogger(__name__)

Color = tuple[int, int, int]  # BGR
TrackLike = tuple[Any, str | None, Sequence[float], float | None]  # (track_id, label, xyxy, conf)

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX; a literal so importing this module does not import cv2
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREEN: Color = (80, 200, 60)
RED: Color = (40, 40, 230)
ORANGE: Color = (0, 160, 255)
HISTORY_COLOR: Color = (255, 200, 0)  # cyan-ish blue
FORECAST_COLOR: Color = (0, 220, 255)  # yellow
FORECAST_ALT_COLOR: Color = (0, 140, 200)


@dataclass(frozen=True)
class Style:
    """Sizes derived from the image: one place that decides how big everything is."""

    font_scale: float
    thickness: int
    line: int
    margin: int

    @classmethod
    def for_image(cls, image: np.ndarray) -> Style:
        short = min(image.shape[:2])
        # 120 px -> 0.33 (text ~8 px tall), 480 px -> 0.53, 1080 px -> 1.0
        font_scale = float(np.clip(0.33 + (short - 120) * (0.67 / 960), 0.33, 1.4))
        thickness = max(1, round(short / 400))
        return cls(font_scale=font_scale, thickness=thickness, line=max(1, round(short / 300)),
                   margin=max(2, round(short / 80)))


def _check_image(image: np.ndarray, copy: bool) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise InputShapeError(f"overlay needs a BGR uint8 (H, W, 3) image, got {shape} {getattr(image, 'dtype', '')}")
    return image.copy() if copy else image


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def upscale_for_overlay(image: np.ndarray, min_short_side: int = 360) -> tuple[np.ndarray, float]:
    """Enlarge a small frame (integer factor, nearest pixels kept sharp) so overlays have room.

    Returns:
        ``(image, scale)``: multiply pixel coordinates (boxes, paths) by ``scale`` before drawing.
        Frames whose short side is already ``>= min_short_side`` come back unchanged with scale 1.
    """
    import cv2

    _check_image(image, copy=False)
    short = min(image.shape[:2])
    factor = max(1, math.ceil(min_short_side / max(1, short)))
    if factor == 1:
        return image, 1.0
    h, w = image.shape[:2]
    return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST), float(factor)


def color_for_id(track_id: Any) -> Color:
    """A stable, well-separated BGR colour for a track id (same id -> same colour in every run)."""
    if isinstance(track_id, (int, np.integer)):
        key = int(track_id)
    else:
        key = zlib.crc32(str(track_id).encode())
    hue = (key * 0.61803398875) % 1.0  # golden-ratio steps spread consecutive ids around the wheel
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _text_size(text: str, style: Style) -> tuple[int, int, int]:
    import cv2

    (w, h), base = cv2.getTextSize(text, FONT, style.font_scale, style.thickness)
    return w, h, base


def _blend_rect(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Color, alpha: float) -> None:
    """Tint a rectangle towards ``color`` by ``alpha``, in place (clipped to the image)."""
    import cv2

    h, w = image.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    # uint8 SIMD path: roi * (1 - alpha) + color * alpha, written back into the view
    cv2.addWeighted(roi, 1.0 - alpha, np.full_like(roi, color), alpha, 0.0, dst=roi)


def _label_height(text: str, style: Style) -> int:
    _, th, base = _text_size(_ascii(text), style)
    return th + base + 2 * max(1, style.margin // 2)


def _label(image: np.ndarray, text: str, x: int, y: int, color: Color, style: Style,
           text_color: Color = BLACK, *, top: int = 0, bottom: int = 0) -> None:
    """Filled label box with its bottom-left at (x, y), kept inside the image rows ``top`` .. ``h - bottom``."""
    import cv2

    text = _ascii(text)
    tw, th, base = _text_size(text, style)
    pad = max(1, style.margin // 2)
    h, w = image.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 2 * pad)))
    y = int(np.clip(y, min(h, top + th + base + 2 * pad), max(th + base + 2 * pad, h - bottom)))
    cv2.rectangle(image, (x, y - th - base - 2 * pad), (x + tw + 2 * pad, y), color, -1)
    cv2.putText(image, text, (x + pad, y - base - pad), FONT, style.font_scale, text_color, style.thickness,
                cv2.LINE_AA)


def _readable_text_color(color: Color) -> Color:
    b, g, r = color
    return BLACK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else WHITE


def draw_tracks(
    image: np.ndarray,
    tracks: Iterable[TrackLike],
    *,
    show_label: bool = True,
    show_conf: bool = True,
    copy: bool = True,
    top: int = 0,
    bottom: int = 0,
) -> np.ndarray:
    """Draw boxes with ``#id label conf`` tags; each id keeps its colour across frames.

    A tag sits above its box, or below it when there is no room above (never over the object when the
    frame has room outside it), and stays out of the ``top``/``bottom`` rows that other overlays use
    (status panel, score strip).

    Args:
        image: BGR uint8 (H, W, 3).
        tracks: ``(track_id, label, xyxy, conf)`` per object; ``track_id`` may be None for untracked
            detections (drawn grey), ``label``/``conf`` may be None. ``xyxy`` in pixels.
        show_label, show_conf: include the class label / confidence in the tag.
        copy: draw on a copy (default) or in place.

    Returns:
        The image with overlays, same shape and dtype.
    """
    import cv2

    out = _check_image(image, copy)
    style = Style.for_image(out)
    h, w = out.shape[:2]
    for track_id, label, xyxy, conf in tracks:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            continue
        p0 = (int(round(np.clip(x0, 0, w - 1))), int(round(np.clip(y0, 0, h - 1))))
        p1 = (int(round(np.clip(x1, 0, w - 1))), int(round(np.clip(y1, 0, h - 1))))
        color = color_for_id(track_id) if track_id is not None else (160, 160, 160)
        cv2.rectangle(out, p0, p1, color, style.line, cv2.LINE_8)  # axis-aligned: no AA needed
        parts = [f"#{track_id}" if track_id is not None else ""]
        if show_label and label:
            parts.append(str(label))
        if show_conf and conf is not None and math.isfinite(float(conf)):
            parts.append(f"{float(conf):.2f}")
        text = " ".join(p for p in parts if p)
        if text:
            lh = _label_height(text, style)
            if p0[1] - lh >= top:  # room above the box
                y_label = p0[1]
            elif p1[1] + lh <= h - bottom:  # below it
                y_label = p1[1] + lh
            else:  # a box filling the frame: inside, at its top
                y_label = p0[1] + lh
            _label(out, text, p0[0], y_label, color, style, _readable_text_color(color), top=top, bottom=bottom)
    return out


def _clean_points(xy: np.ndarray) -> np.ndarray:
    """(T, 2) float -> (N, 1, 2) int32 polyline points without NaN rows."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    xy = xy[np.isfinite(xy).all(axis=1)]
    return np.round(xy).astype(np.int32).reshape(-1, 1, 2)


def _dashed(image: np.ndarray, pts: np.ndarray, color: Color, thickness: int, dash: int) -> None:
    """Dashed polyline through ``pts`` (N, 1, 2): draw every other ``dash``-pixel piece."""
    import cv2

    pts = pts.reshape(-1, 2).astype(np.float64)
    carry, on = 0.0, True
    for a, b in zip(pts[:-1], pts[1:]):
        seg = b - a
        length = float(np.hypot(*seg))
        pos = 0.0
        while pos < length:
            step = min(dash - carry, length - pos)
            if on:
                p = a + seg * (pos / length)
                q = a + seg * ((pos + step) / length)
                cv2.line(image, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), color, thickness,
                         cv2.LINE_AA)
            pos += step
            carry += step
            if carry >= dash:
                carry, on = 0.0, not on


def draw_paths(
    image: np.ndarray,
    history_xy: np.ndarray | None,
    forecast_xy: np.ndarray | None = None,
    *,
    mode_probs: Sequence[float] | np.ndarray | None = None,
    best_mode: int | None = None,
    color: Color | None = None,
    copy: bool = True,
) -> np.ndarray:
    """Draw a track's past path (solid) and its forecast (dashed) in pixel coordinates.

    Args:
        image: BGR uint8 (H, W, 3).
        history_xy: (T, 2) past positions, oldest first; NaN rows are skipped. May be None.
        forecast_xy: (T_f, 2) one forecast or (K, T_f, 2) K modes. Forecasts start from the last
            history point. The best mode is drawn thick and bright, the others thin.
        mode_probs: (K,) mode probabilities; shown next to each mode end and used to pick the best.
        best_mode: index of the best mode (overrides ``mode_probs``); default 0.
        color: history colour (e.g. :func:`color_for_id` of the track); forecasts use yellow.
        copy: draw on a copy (default) or in place.
    """
    import cv2

    out = _check_image(image, copy)
    style = Style.for_image(out)
    hist = _clean_points(history_xy) if history_xy is not None else np.zeros((0, 1, 2), np.int32)
    hist_color = color or HISTORY_COLOR
    if len(hist) >= 2:
        cv2.polylines(out, [hist], False, hist_color, style.line, cv2.LINE_AA)
    if len(hist):
        cv2.circle(out, tuple(hist[-1, 0]), style.line + 1, hist_color, -1, cv2.LINE_AA)
    if forecast_xy is None:
        return out
    fc = np.asarray(forecast_xy, dtype=np.float64)
    if fc.ndim == 2:
        fc = fc[None]  # (1, T_f, 2)
    if fc.ndim != 3 or fc.shape[-1] != 2:
        raise InputShapeError(f"forecast_xy must be (T, 2) or (K, T, 2), got {np.shape(forecast_xy)}")
    probs = None if mode_probs is None else np.asarray(mode_probs, dtype=np.float64).reshape(-1)
    if probs is not None and len(probs) != len(fc):
        raise InputShapeError(f"mode_probs has {len(probs)} values for {len(fc)} forecast modes")
    if best_mode is None:
        best_mode = int(np.nanargmax(probs)) if probs is not None and np.isfinite(probs).any() else 0
    dash = max(5, style.margin * 3)
    # others first, best last so it is drawn on top
    for k in sorted(range(len(fc)), key=lambda k: k == best_mode):
        pts = _clean_points(fc[k])
        if len(hist):
            pts = np.concatenate([hist[-1:], pts])
        if len(pts) < 2:
            continue
        best = k == best_mode
        _dashed(out, pts, FORECAST_COLOR if best else FORECAST_ALT_COLOR,
                style.line + 1 if best else max(1, style.line - 1 if style.line > 1 else 1), dash)
        end = tuple(pts[-1, 0])
        cv2.circle(out, end, style.line + (2 if best else 0), FORECAST_COLOR if best else FORECAST_ALT_COLOR, -1,
                   cv2.LINE_AA)
        if probs is not None and len(fc) > 1 and (best or min(out.shape[:2]) >= 360):
            cv2.putText(out, f"{probs[k]:.2f}", (int(end[0]) + 3, int(end[1]) - 3), FONT, style.font_scale * 0.8,
                        FORECAST_COLOR if best else FORECAST_ALT_COLOR, style.thickness, cv2.LINE_AA)
    return out


def _score_bar_geometry(image: np.ndarray, with_history: bool) -> tuple[int, int, int]:
    """(bar height, timeline height, whole strip height) in pixels for ``image``."""
    style = Style.for_image(image)
    h = image.shape[0]
    bar_h = max(5, round(h * 0.025))
    timeline_h = max(8, round(h * 0.06)) if with_history else 0
    _, th, base = _text_size("Ag", style)
    return bar_h, timeline_h, bar_h + timeline_h + th + base + 3 * style.margin


def score_bar_height(image: np.ndarray, with_history: bool = True) -> int:
    """Height in pixels of the strip :func:`draw_score_bar` covers at the bottom of ``image``."""
    return _score_bar_geometry(image, with_history)[2]


def draw_score_bar(
    image: np.ndarray,
    score: float | None,
    threshold: float,
    is_anomaly: bool,
    *,
    history: Sequence[float] | np.ndarray | None = None,
    vmax: float | None = None,
    label: str = "anomaly",
    copy: bool = True,
) -> np.ndarray:
    """A strip along the bottom: score bar (green / red when anomalous), threshold mark, recent scores.

    Args:
        image: BGR uint8 (H, W, 3).
        score: current anomaly score (None or NaN while the model warms up: drawn as "n/a").
        threshold: decision threshold, drawn as a white tick.
        is_anomaly: colours the bar red and frames the image in red.
        history: recent scores, oldest first, drawn as a timeline above the bar (NaN gaps kept).
        vmax: score at the right end of the bar; default ``2 * threshold`` (threshold at the middle)
            or 1 when the threshold is not positive. Larger scores fill the bar.
        label: text before the value.
        copy: draw on a copy (default) or in place.

    Layout: the strip is :func:`score_bar_height` pixels tall; :func:`draw_caption` sits above it
    and :func:`draw_status` in the top-left corner, so all overlays can be drawn on one frame.
    """
    import cv2

    out = _check_image(image, copy)
    style = Style.for_image(out)
    h, w = out.shape[:2]
    if vmax is None or not vmax > 0:
        vmax = 2 * threshold if threshold > 0 else 1.0
    bar_h, timeline_h, strip_h = _score_bar_geometry(out, history is not None)
    _, th, base = _text_size("Ag", style)
    y_strip = h - strip_h
    _blend_rect(out, 0, y_strip, w, h, BLACK, 0.55)
    x0, x1 = style.margin, w - style.margin
    span = max(1, x1 - x0)

    def to_x(v: float) -> int:
        return x0 + int(round(np.clip(v / vmax, 0.0, 1.0) * span))

    valid = score is not None and math.isfinite(float(score))
    bar_color = RED if is_anomaly else GREEN
    y_bar0, y_bar1 = h - style.margin - bar_h, h - style.margin
    cv2.rectangle(out, (x0, y_bar0), (x1, y_bar1), (90, 90, 90), -1)
    if valid:
        cv2.rectangle(out, (x0, y_bar0), (to_x(float(score)), y_bar1), bar_color, -1)
    if history is not None:
        hist = np.asarray(history, dtype=np.float64).reshape(-1)
        y_t0, y_t1 = y_bar0 - style.margin - timeline_h, y_bar0 - style.margin
        if len(hist) >= 2:
            xs = x0 + np.linspace(0, span, len(hist))
            ys = y_t1 - np.clip(hist / vmax, 0, 1) * (y_t1 - y_t0)
            ok = np.isfinite(ys)
            # polyline per run of finite values so warm-up gaps stay gaps
            run: list[tuple[int, int]] = []
            for x, y, good in zip(xs, ys, ok):
                if good:
                    run.append((int(round(x)), int(round(y))))
                elif run:
                    if len(run) > 1:
                        cv2.polylines(out, [np.array(run, np.int32)], False, WHITE, 1, cv2.LINE_AA)
                    run = []
            if len(run) > 1:
                cv2.polylines(out, [np.array(run, np.int32)], False, WHITE, 1, cv2.LINE_AA)
        thr_y = y_t1 - int(round(np.clip(threshold / vmax, 0, 1) * (y_t1 - y_t0)))
        cv2.line(out, (x0, thr_y), (x1, thr_y), ORANGE, 1)
    tx = to_x(threshold)
    cv2.line(out, (tx, y_bar0 - max(2, bar_h // 2)), (tx, y_bar1 + 1), WHITE, max(1, style.line))
    value = f"{float(score):.3f}" if valid else "n/a"
    text = f"{label} {value}  thr {threshold:.3f}" + ("  ANOMALY" if is_anomaly else "")
    cv2.putText(out, _ascii(text), (x0, y_strip + style.margin + th), FONT, style.font_scale,
                RED if is_anomaly else WHITE, style.thickness, cv2.LINE_AA)
    if is_anomaly:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), RED, max(2, style.line * 2))
    return out


def _wrap(text: str, max_width: int, style: Style, max_lines: int) -> list[str]:
    words = _ascii(text).split()
    lines: list[str] = []
    cur = ""
    for word in words:
        cand = f"{cur} {word}".strip()
        if _text_size(cand, style)[0] <= max_width or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = word
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_size(last + "...", style)[0] > max_width:
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def _text_block(image: np.ndarray, lines: list[str], x: int, y: int, style: Style, color: Color,
                width: int | None = None) -> None:
    """Lines of text on a translucent dark box whose top-left is (x, y)."""
    import cv2

    if not lines:
        return
    _, th, base = _text_size("Ag", style)
    line_h = th + base + max(1, style.margin // 2)
    tw = width if width is not None else max(_text_size(line, style)[0] for line in lines)
    _blend_rect(image, x, y, x + tw + 2 * style.margin, y + line_h * len(lines) + style.margin, BLACK, 0.55)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (x + style.margin, y + style.margin // 2 + th + i * line_h), FONT, style.font_scale,
                    color, style.thickness, cv2.LINE_AA)


def _caption_block_height(style: Style, n_lines: int) -> int:
    _, th, base = _text_size("Ag", style)
    return (th + base + max(1, style.margin // 2)) * n_lines + style.margin


def caption_height(image: np.ndarray, text: str | None, max_lines: int | None = None) -> int:
    """Rows a bottom :func:`draw_caption` band of ``text`` takes (0 without text), score strip excluded."""
    if not text or not text.strip():
        return 0
    style = Style.for_image(image)
    h, w = image.shape[:2]
    if max_lines is None:
        max_lines = 1 if h < 240 else 2 if h < 480 else 3
    return _caption_block_height(style, len(_wrap(text, w - 4 * style.margin, style, max_lines)))


def draw_caption(image: np.ndarray, text: str, *, position: str = "bottom", bottom_offset: int | None = None,
                 max_lines: int | None = None, copy: bool = True) -> np.ndarray:
    """A caption across the image (wrapped, at most ``max_lines``) on a translucent band.

    Args:
        position: ``"bottom"`` (subtitle style, default) or ``"top"``.
        bottom_offset: pixels kept free under a bottom caption; default :func:`score_bar_height`, so
            the caption sits just above the strip of :func:`draw_score_bar`. Use 0 without a bar.
        max_lines: wrap to at most this many lines (cut with "..."); default 1 below 240 px image
            height, 2 below 480 px, else 3, so small frames keep most of their content visible.
    """
    out = _check_image(image, copy)
    if not text or not text.strip():
        return out
    style = Style.for_image(out)
    h, w = out.shape[:2]
    if max_lines is None:
        max_lines = 1 if h < 240 else 2 if h < 480 else 3
    lines = _wrap(text, w - 4 * style.margin, style, max_lines)
    block_h = _caption_block_height(style, len(lines))
    if position == "top":
        y = 0
    else:
        offset = score_bar_height(out) if bottom_offset is None else bottom_offset
        y = max(0, h - offset - block_h)
    _text_block(out, lines, 0, y, style, WHITE, width=w - 2 * style.margin)
    return out


def status_height(image: np.ndarray, n_lines: int) -> int:
    """Rows a :func:`draw_status` panel of ``n_lines`` lines takes (so other overlays can keep clear of it)."""
    if n_lines <= 0:
        return 0
    style = Style.for_image(image)
    style = Style(style.font_scale * 0.85, style.thickness, style.line, style.margin)
    _, th, base = _text_size("Ag", style)
    return (th + base + max(1, style.margin // 2)) * n_lines + style.margin


def draw_status(image: np.ndarray, lines: Sequence[str] | Mapping[str, Any], *, corner: str = "top-left",
                copy: bool = True) -> np.ndarray:
    """Small status panel (fps, lag, drops, "learning normality: 12/30 s") in a corner.

    Args:
        lines: strings, or a mapping rendered as ``key: value`` lines (floats with 3 significant digits).
        corner: ``"top-left"``, ``"top-right"``, ``"bottom-left"`` or ``"bottom-right"``.
    """
    out = _check_image(image, copy)
    if isinstance(lines, Mapping):
        lines = [f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in lines.items()]
    texts = [_ascii(str(line)) for line in lines if str(line)]
    if not texts:
        return out
    style = Style.for_image(out)
    style = Style(style.font_scale * 0.85, style.thickness, style.line, style.margin)
    h, w = out.shape[:2]
    tw = max(_text_size(t, style)[0] for t in texts)
    block_w = tw + 2 * style.margin
    block_h = status_height(out, len(texts))
    x = w - block_w if "right" in corner else 0
    y = h - block_h if "bottom" in corner else 0
    _text_block(out, texts, max(0, x), max(0, y), style, WHITE)
    return out


# -- plots -------------------------------------------------------------------------------------


def _event_span(event: Any) -> tuple[float, float, float | None]:
    """(start_s, end_s, peak_s) from a dataclass/object, a mapping, or a (start, end[, peak]) tuple."""
    if isinstance(event, Mapping):
        get = event.get
    elif hasattr(event, "start_s"):
        def get(key: str, default: Any = None) -> Any:
            return getattr(event, key, default)
    else:
        seq = list(event)
        return float(seq[0]), float(seq[1]), (float(seq[2]) if len(seq) > 2 and seq[2] is not None else None)
    peak = get("peak_s", None)
    return float(get("start_s")), float(get("end_s")), (None if peak is None else float(peak))


def plot_anomaly_timeline(
    path: str | os.PathLike[str],
    timestamps_s: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float | None,
    events: Iterable[Any] = (),
    title: str = "",
    *,
    ground_truth: Sequence[bool] | np.ndarray | None = None,
    dpi: int = 100,
    size_in: tuple[float, float] = (10.0, 3.2),
) -> Path:
    """Write a PNG of the anomaly score over time with its threshold and detected events.

    Args:
        path: output PNG (written atomically).
        timestamps_s: (T,) seconds; scores: (T,) floats (NaN = no score yet, shown as a gap).
        threshold: drawn as a dashed line (None: not drawn).
        events: detected events, shaded red; each has ``start_s``/``end_s`` (and optional ``peak_s``)
            as attributes, mapping keys, or a ``(start_s, end_s[, peak_s])`` tuple.
        title: figure title (e.g. the video name).
        ground_truth: optional (T,) bool labels, shaded as a grey band under the curve.

    Returns:
        ``Path(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(t) != len(s):
        raise InputShapeError(f"timestamps_s has {len(t)} values but scores has {len(s)} ({path})")
    fig = Figure(figsize=size_in, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if ground_truth is not None:
        gt = np.asarray(ground_truth, dtype=bool).reshape(-1)
        if len(gt) != len(t):
            raise InputShapeError(f"ground_truth has {len(gt)} values for {len(t)} timestamps ({path})")
        if gt.any():
            ax.fill_between(t, 0, 1, where=gt, transform=ax.get_xaxis_transform(), color="0.5", alpha=0.25,
                            step="mid", linewidth=0, label="ground truth")
    n_events = 0
    for event in events:
        start, end, peak = _event_span(event)
        ax.axvspan(start, end, color="tab:red", alpha=0.2, linewidth=0, label="event" if n_events == 0 else None)
        if peak is not None:
            ax.axvline(peak, color="tab:red", linewidth=0.8, alpha=0.7)
        n_events += 1
    ax.plot(t, s, color="tab:blue", linewidth=1.2, label="score")
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, color="tab:orange", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("anomaly score")
    if len(t):
        ax.set_xlim(float(np.nanmin(t)), float(np.nanmax(t)) if np.nanmax(t) > np.nanmin(t) else float(t[0]) + 1)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    fig.tight_layout()
    final = Path(path)
    with atomic_path(final) as tmp:
        fig.savefig(tmp, format="png")
    return final

"""The dashboard's ASGI app (Starlette): page, JSON API, SSE updates, MJPEG streams, clips, metrics.

Routes (every one behind the token when a token is set, see :class:`TokenGuard`):

* ``GET /`` and ``/static/...``: the page (static files shipped in this package);
* ``GET /api/status``: cameras with state and figures; ``GET /api/events``: events of this run, newest first;
* ``GET /api/updates``: Server-Sent Events, a status + new scores message every ``update_s`` seconds;
* ``GET /stream/<camera>.mjpg``: multipart JPEG of the annotated view, at most ``stream_fps`` frames/s;
  frames are encoded in a worker thread from the newest published frame, so the pipeline never waits;
* ``GET /clips/<camera>/<file>``: event clips (``.mp4``) and thumbnails (``.jpg``) of that camera's output
  folder; anything else (``..``, encoded dots, absolute paths, symlinks, other files) is 404;
* ``POST /api/events/<id>/feedback``: ``{"label": "false_alarm" | "confirmed"}``, appended to events.jsonl;
* ``GET /metrics``: Prometheus text format, per camera.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidseq.monitor import CameraMonitor

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CLIP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.(mp4|jpg)")
CLIP_TYPES = {"mp4": "video/mp4", "jpg": "image/jpeg"}
FEEDBACK_LABELS = ("false_alarm", "confirmed")
MAX_BODY_BYTES = 1024
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# The page loads only its own files; nothing may frame it (clickjacking); no referrer leaks ?token=.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class WebSettings:
    """Dashboard options."""

    token: str | None = None  # required on every route when set
    stream_fps: float = 10.0  # MJPEG frames per second per client, at most
    jpeg_quality: int = 80
    update_s: float = 0.5  # SSE period
    loopback_only: bool = True  # refuse Host headers other than loopback names (DNS rebinding)


TOKEN_COOKIE = "vidseq_token"


class TokenGuard:
    """ASGI middleware: ``Authorization: Bearer <token>`` or ``?token=<token>`` on every request, else 401.

    A request authorised by ``?token=`` also gets the token as an ``HttpOnly; SameSite=Strict`` cookie,
    which then authorises the page's own requests (its CSS/JS, images, video); a cross-site page never
    sends it. Adds the security headers to every response. Comparisons are constant-time.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _check(self, given: str | None) -> bool:
        return given is not None and self.token is not None and hmac.compare_digest(given.encode(), self.token)

    def _authorised(self, scope: Scope) -> tuple[bool, bool]:
        """``(authorised, by query parameter)``."""
        if self.token is None:
            return True, False
        headers = Headers(scope=scope)
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self._check(auth[7:].strip()):
            return True, False
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if values and self._check(values[0]):
            return True, True
        cookies = Request(scope).cookies
        return self._check(cookies.get(TOKEN_COOKIE)), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        ok, by_query = self._authorised(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    if k not in headers:
                        headers[k] = v
                if by_query and self.token is not None:
                    headers.append("set-cookie", f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; "
                                                 "SameSite=Strict")
            await send(message)

        if not ok:
            resp = PlainTextResponse("401 unauthorized: give the dashboard token (Authorization: Bearer or ?token=)",
                                     status_code=401, headers={"www-authenticate": 'Bearer realm="vidseq"'})
            await resp(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class _JpegCache:
    """The newest frame of each camera encoded once, however many clients watch it."""

    def __init__(self, quality: int) -> None:
        self.quality = int(quality)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, bytes]] = {}

    def get(self, name: str, seq: int, image: np.ndarray) -> bytes:
        import cv2

        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == seq:
                return hit[1]
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        data = buf.tobytes() if ok else b""
        with self._lock:
            self._cache[name] = (seq, data)
        return data


def _event_view(cam: CameraMonitor, e: dict[str, Any]) -> dict[str, Any]:
    base = f"/clips/{cam.name}/"
    return {"id": e["id"], "camera": cam.name, "wall_time": e.get("wall_time"), "start_s": e.get("start_s"),
            "alert_s": e.get("alert_s"), "end_s": e.get("end_s"), "duration_s": e.get("duration_s"),
            "peak_score": e.get("peak_score"), "cause": e.get("cause"), "feedback": e.get("feedback"),
            "clip_url": base + e["clip"] if e.get("clip") and e.get("clip_ready") else None,
            "thumbnail_url": base + e["thumbnail"] if e.get("thumbnail") else None,
            "recording": bool(e.get("clip")) and not e.get("clip_ready")}


def _all_events(cams: dict[str, CameraMonitor]) -> tuple[int, list[dict[str, Any]]]:
    version, out = 0, []
    for cam in cams.values():
        v, evs = cam.events()
        version += v
        out.extend(_event_view(cam, e) for e in evs)
    out.sort(key=lambda e: (e["wall_time"] or "", e["id"]), reverse=True)
    return version, out


def _status(cams: dict[str, CameraMonitor]) -> dict[str, Any]:
    return {"time": time.time(), "cameras": [c.snapshot() for c in cams.values()]}


def _metrics_text(cams: dict[str, CameraMonitor]) -> str:
    """Prometheus text exposition format 0.0.4 (camera names are restricted to [A-Za-z0-9_-])."""
    snaps = [c.snapshot() for c in cams.values()]
    series = [
        ("vidseq_frames_total", "counter", "Frames scored.", "frames"),
        ("vidseq_dropped_frames_total", "counter", "Frames replaced by a newer one before scoring.", "dropped"),
        ("vidseq_reconnects_total", "counter", "Reconnects of the source.", "reconnects"),
        ("vidseq_alerts_total", "counter", "Alerts raised.", "alerts"),
        ("vidseq_processing_fps", "gauge", "Frames scored per second (recent).", "fps"),
        ("vidseq_latency_seconds", "gauge", "Capture-to-score latency of the newest frame.", "latency_ms"),
        ("vidseq_anomaly_score", "gauge", "Newest anomaly score.", "score"),
        ("vidseq_anomaly_threshold", "gauge", "Alert threshold.", "threshold"),
    ]
    lines: list[str] = []
    for name, kind, help_text, key in series:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for s in snaps:
            v = s[key]
            if v is None:
                continue
            if key == "latency_ms":
                v = v / 1000.0
            lines.append(f'{name}{{camera="{s["name"]}"}} {float(v):.6g}')
    lines += ["# HELP vidseq_camera_up 1 while the camera delivers frames (learning or scoring).",
              "# TYPE vidseq_camera_up gauge"]
    lines += [f'vidseq_camera_up{{camera="{s["name"]}",state="{s["state"]}"}} '
              f'{int(s["state"] in ("learning", "scoring", "running"))}' for s in snaps]
    return "\n".join(lines) + "\n"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def create_app(cameras: list[CameraMonitor], settings: WebSettings, stop: threading.Event) -> Starlette:
    """The dashboard app for ``cameras``; streaming responses end when ``stop`` is set."""
    cams = {c.name: c for c in cameras}
    jpegs = _JpegCache(settings.jpeg_quality)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def api_status(request: Request) -> Response:
        return JSONResponse(_status(cams))

    async def api_events(request: Request) -> Response:
        version, events = _all_events(cams)
        return JSONResponse({"version": version, "events": events})

    async def api_updates(request: Request) -> Response:
        scores_seen = {name: 0 for name in cams}

        async def gen() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            while not stop.is_set():
                scores = {}
                for name, cam in cams.items():
                    new = cam.scores_since(scores_seen[name])
                    if new:
                        scores_seen[name] = new[-1][0]
                    scores[name] = [[round(t, 3), round(s, 4), int(a)] for _, t, s, a in new[-500:]]
                version = sum(c.events()[0] for c in cams.values())
                msg = {**_status(cams), "scores": scores, "events_version": version}
                yield f"event: update\ndata: {json.dumps(msg)}\n\n".encode()
                await asyncio.sleep(settings.update_s)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def mjpeg(request: Request) -> Response:
        cam = cams.get(request.path_params["camera"])
        if cam is None:
            return PlainTextResponse("404 no such camera", status_code=404)
        period = 1.0 / max(settings.stream_fps, 0.1)

        async def gen() -> AsyncIterator[bytes]:
            last = -1
            while not stop.is_set():
                t0 = time.monotonic()
                seq, image = cam.latest_image()
                if image is not None and seq != last:
                    data = await run_in_threadpool(jpegs.get, cam.name, seq, image)
                    last = seq
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                           + data + b"\r\n")
                await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))

        return StreamingResponse(gen(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"cache-control": "no-store"})

    async def clip(request: Request) -> Response:
        cam = cams.get(request.path_params["camera"])
        name = request.path_params["name"]
        m = CLIP_NAME.fullmatch(name)
        if cam is None or m is None:
            return PlainTextResponse("404 not found", status_code=404)
        folder = cam.clip_dir.resolve()
        path = folder / name
        # no symlinks (even ones pointing inside), only regular files directly in this run's folder
        if path.is_symlink() or not path.is_file() or path.resolve().parent != folder:
            return PlainTextResponse("404 not found", status_code=404)
        return FileResponse(path, media_type=CLIP_TYPES[m.group(1)])

    async def feedback(request: Request) -> Response:
        event_id = request.path_params["event_id"]
        cam = cams.get(event_id.rsplit("-", 1)[0])
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "Content-Type must be application/json"}, status_code=415)
        try:
            body = await _read_body(request, MAX_BODY_BYTES)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            return JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        if not isinstance(data, dict) or set(data) != {"label"} or data["label"] not in FEEDBACK_LABELS:
            return JSONResponse({"error": 'expected {"label": "false_alarm" | "confirmed"}'}, status_code=400)
        if cam is None:
            return JSONResponse({"error": f"no event {event_id}"}, status_code=404)
        event = await run_in_threadpool(cam.add_feedback, event_id, data["label"])
        if event is None:
            return JSONResponse({"error": f"no event {event_id}"}, status_code=404)
        return JSONResponse({"ok": True, "event": _event_view(cam, event)})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(_metrics_text(cams), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/", index),
        Route("/api/status", api_status),
        Route("/api/events", api_events),
        Route("/api/updates", api_updates),
        Route("/api/events/{event_id}/feedback", feedback, methods=["POST"]),
        Route("/stream/{camera}.mjpg", mjpeg),
        Route("/clips/{camera}/{name}", clip),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(TokenGuard, token=settings.token)]
    if settings.loopback_only:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    return Starlette(routes=routes, middleware=middleware)

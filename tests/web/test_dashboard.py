"""The dashboard end to end: a real ``vidseq monitor --web`` process, plain HTTP and one headless Chromium.

Tests run in file order against one server (module fixture); the last one stops it with SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"
# tiny random-init detector, 2 s of normality, an alert on the first flashing burst, short clips
FAST = ["pipeline.backbone_weights=yolov8n.yaml", "pipeline.tracker.imgsz=128", "pipeline.trajectory.model=null",
        "pipeline.anomaly.fit_s=2.0", "alerts.threshold=-1.0", "alerts.min_duration_s=0.2", "alerts.cooldown_s=1.0",
        "alerts.pre_roll_s=0.5", "alerts.post_roll_s=0.5"]


def write_event_video(path: Path, seconds: float = 90.0, fps: float = 15.0, size: tuple[int, int] = (160, 120),
                      first_burst_s: float = 3.0, calm_s: float = 3.0, burst_s: float = 1.5) -> Path:
    """A calm scene (one square gliding back and forth) with bursts of flashing squares (the anomalies)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(int(seconds * fps)):
        t = i / fps
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, :, 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
        x = int((w - 20) * (0.5 + 0.5 * np.sin(t * 0.8)))
        frame[50:66, x:x + 16] = 255
        if t >= first_burst_s and (t - first_burst_s) % (calm_s + burst_s) < burst_s:
            for _ in range(6):
                bx, by = rng.integers(0, w - 24), rng.integers(0, h - 24)
                frame[by:by + 24, bx:bx + 24] = rng.integers(0, 255, 3)
        writer.write(frame)
    writer.release()
    return path


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Dashboard:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    out: Path
    camera: str
    token: str = TOKEN
    log: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get_json(self, path: str) -> Any:
        import httpx

        r = httpx.get(self.url + path, headers=self.auth, timeout=10)
        r.raise_for_status()
        return r.json()

    def ready_event(self, timeout_s: float = 40.0) -> dict[str, Any]:
        """The first event whose clip is complete."""
        return wait_for(lambda: next((e for e in self.get_json("/api/events")["events"] if e["clip_url"]), None),
                        timeout_s, "an event with a finished clip")

    def events_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.out / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``vidseq monitor --source cam.avi --realtime --web 127.0.0.1:0 --token ...`` in a subprocess."""
    tmp = tmp_path_factory.mktemp("dashboard")
    video = write_event_video(tmp / "cam.avi")
    out = tmp / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "VIDSEQ_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("VIDSEQ_WEB_TOKEN", None)
    cmd = [sys.executable, "-m", "vidseq", "monitor", "--source", str(video), "--realtime", "--out", str(out),
           "--web", "127.0.0.1:0", "--token", TOKEN, *[a for kv in FAST for a in ("--set", kv)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:  # keep reading so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            m = re.match(r"dashboard: (http://127\.0\.0\.1:\d+)/", line)
            if m and not url:
                url.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(60) or not url:
        proc.kill()
        pytest.fail("the dashboard did not start:\n" + "\n".join(lines[-30:]))
    dash = Dashboard(proc, url[0], out, "cam", log=lines)
    try:
        yield dash
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def raw_get(dash: Dashboard, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2e``)."""
    u = urlsplit(dash.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in {**dash.auth, **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_jpeg_parts(dash: Dashboard, n: int, timeout_s: float = 15.0) -> list[bytes]:
    parts: list[bytes] = []
    buf = b""
    with httpx.stream("GET", f"{dash.url}/stream/{dash.camera}.mjpg", headers=dash.auth, timeout=timeout_s) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        deadline = time.monotonic() + timeout_s
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if not buf.startswith(b"--frame\r\n") or head_end < 0:
                    break
                headers = dict(line.split(": ", 1) for line in buf[9:head_end].decode().split("\r\n"))
                length = int(headers["Content-Length"])
                if len(buf) < head_end + 4 + length + 2:
                    break
                assert headers["Content-Type"] == "image/jpeg"
                parts.append(buf[head_end + 4:head_end + 4 + length])
                buf = buf[head_end + 4 + length + 2:]
            if len(parts) >= n or time.monotonic() > deadline:
                break
    return parts


# -- browser (first, so it sees the event appear) ------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_browser_page_live_view_event_clip_feedback(dashboard: Dashboard, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{dashboard.url}/?token={TOKEN}")
            tile = page.locator(f'.tile[data-camera="{dashboard.camera}"]')
            tile.wait_for(timeout=15000)
            live = tile.locator("img.live")
            page.wait_for_function("img => img.naturalWidth > 0", arg=live.element_handle(), timeout=15000)
            first = live.screenshot()
            wait_for(lambda: live.screenshot() != first, 10, "the live image to change")
            page.wait_for_function(
                "() => ['learning', 'scoring'].some(s => document.querySelector('.tile .state').textContent === s)",
                timeout=15000)
            event = page.locator("#events li.event").first
            event.wait_for(timeout=40000)  # appears without reloading (SSE)
            page.wait_for_function("() => { const v = document.querySelector('#events video.clip[src]');"
                                   " return v !== null && v.readyState >= 3; }", timeout=40000)
            event_id = event.get_attribute("data-id")
            clip_li = page.locator("#events li.event", has=page.locator("video.clip[src]")).first
            clip_id = clip_li.get_attribute("data-id")
            clip_li.locator("button[data-label=false_alarm]").click()
            page.wait_for_function(
                f"() => document.querySelector('li.event[data-id=\"{clip_id}\"] .ev-feedback').textContent"
                " === 'false alarm'", timeout=10000)
            page.wait_for_timeout(1500)  # let the chart draw a few points
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            if os.environ.get("VIDSEQ_DASHBOARD_SCREENSHOT"):  # docs/img/dashboard.png is taken this way
                page.screenshot(path=os.environ["VIDSEQ_DASHBOARD_SCREENSHOT"])
        finally:
            browser.close()
    assert event_id is not None and (tmp_path / "dashboard.png").stat().st_size > 10_000
    feedback = [r for r in dashboard.events_lines() if r["type"] == "feedback"]
    assert {"id": clip_id, "label": "false_alarm"}.items() <= feedback[-1].items()


# -- plain HTTP --------------------------------------------------------------------------------------
def test_status_shows_the_camera_scoring(dashboard: Dashboard) -> None:
    cam = wait_for(lambda: next((c for c in dashboard.get_json("/api/status")["cameras"]
                                 if c["state"] == "scoring"), None), 30, "the camera to score")
    assert cam["name"] == dashboard.camera and cam["frames"] > 0 and cam["fps"] > 0
    assert cam["latency_ms"] is not None and cam["threshold"] == -1.0


def test_every_route_needs_the_token(dashboard: Dashboard) -> None:
    ev = dashboard.ready_event()
    routes = ["/", "/static/app.js", "/api/status", "/api/events", "/api/updates", f"/stream/{dashboard.camera}.mjpg",
              ev["clip_url"], ev["thumbnail_url"], "/metrics", "/nonexistent"]
    for path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"}):
            r = httpx.get(dashboard.url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (path, headers)
            assert "set-cookie" not in r.headers
        r = httpx.get(f"{dashboard.url}{path}?token=wrong-token-123", timeout=10)
        assert r.status_code == 401, path
    r = httpx.post(f"{dashboard.url}/api/events/{ev['id']}/feedback", json={"label": "confirmed"}, timeout=10)
    assert r.status_code == 401
    # the right token: header, query parameter, then the cookie the query parameter set
    assert httpx.get(dashboard.url + "/api/status", headers=dashboard.auth, timeout=10).status_code == 200
    r = httpx.get(f"{dashboard.url}/?token={TOKEN}", timeout=10)
    assert r.status_code == 200 and "vidseq monitor" in r.text
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        client.cookies.set("vidseq_token", TOKEN)
        assert client.get("/static/app.js").status_code == 200
        assert client.get(ev["thumbnail_url"]).headers["content-type"] == "image/jpeg"


def test_no_wildcard_cors_and_security_headers(dashboard: Dashboard) -> None:
    r = httpx.get(dashboard.url + "/api/status", headers={**dashboard.auth, "Origin": "http://evil.example"},
                  timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(dashboard.url + "/api/status", headers={**dashboard.auth, "Origin": "http://evil.example",
                                                                "Access-Control-Request-Method": "GET"}, timeout=10)
    assert "access-control-allow-origin" not in pre.headers
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    # a loopback dashboard answers only loopback Host names (DNS rebinding)
    assert raw_get(dashboard, "/api/status", {"Host": "evil.example"})[0] == 400


def test_mjpeg_stream_yields_changing_jpeg_parts(dashboard: Dashboard) -> None:
    parts = read_jpeg_parts(dashboard, 3)
    assert len(parts) == 3
    assert all(p[:2] == b"\xff\xd8" and p[-2:] == b"\xff\xd9" for p in parts)
    assert len(set(parts)) == 3  # newer frames, not the same one again


def test_a_stalled_stream_client_never_blocks_the_pipeline(dashboard: Dashboard) -> None:
    u = urlsplit(dashboard.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.sendall(f"GET /stream/{dashboard.camera}.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        before = dashboard.get_json("/api/status")["cameras"][0]["frames"]
        # the client reads nothing, so the server's socket buffer fills; the pipeline must keep scoring
        # (a count of frames, not a rate: a loaded CI box may score only a few frames a second)
        wait_for(lambda: dashboard.get_json("/api/status")["cameras"][0]["frames"] - before >= 20, 60,
                 "the pipeline to score 20 more frames while a stream client is stalled")
    finally:
        sock.close()


def test_clips_are_served_and_traversal_is_404(dashboard: Dashboard, tmp_path: Path) -> None:
    import av

    ev = dashboard.ready_event()
    r = httpx.get(dashboard.url + ev["clip_url"], headers=dashboard.auth, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4" and r.content[4:8] == b"ftyp"
    local = tmp_path / "clip.mp4"
    local.write_bytes(r.content)
    with av.open(str(local)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(stream)) > 5
    part = httpx.get(dashboard.url + ev["clip_url"], headers={**dashboard.auth, "Range": "bytes=0-99"}, timeout=10)
    assert part.status_code == 206 and len(part.content) == 100  # browsers seek with ranges

    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"secret")
    cam = dashboard.camera
    clip_name = ev["clip_url"].rsplit("/", 1)[1]
    (dashboard.out / "link_out.mp4").symlink_to(secret)
    (dashboard.out / "link_in.mp4").symlink_to(dashboard.out / clip_name)
    attempts = [
        f"/clips/{cam}/../events.jsonl", f"/clips/{cam}/%2e%2e/events.jsonl", f"/clips/{cam}/%2E%2E%2Fevents.jsonl",
        f"/clips/{cam}/..%2f..%2f..%2fetc%2fpasswd", f"/clips/{cam}/%2fetc%2fpasswd", f"/clips/{cam}//etc/passwd",
        f"/clips/{cam}/{secret}", f"/clips/{cam}/%2e%2e%2f{secret.parent.name}%2fsecret.mp4",
        f"/clips/{cam}/events.jsonl", f"/clips/{cam}/monitor_summary.json", f"/clips/{cam}/.hidden.mp4",
        f"/clips/{cam}/link_out.mp4", f"/clips/{cam}/link_in.mp4", f"/clips/nocam/{clip_name}",
        f"/clips/%2e%2e/{clip_name}", f"/clips/{cam}/{clip_name}%00.jpg",
    ]
    for path in attempts:
        status, body = raw_get(dashboard, path)
        assert status == 404, path
        assert b"secret" not in body and b"root:" not in body and b'"type"' not in body


def test_feedback_validated_and_appended(dashboard: Dashboard) -> None:
    ev = dashboard.ready_event()
    url = f"{dashboard.url}/api/events/{ev['id']}/feedback"
    before = (dashboard.out / "events.jsonl").read_bytes()
    json_hdr = {**dashboard.auth, "Content-Type": "application/json"}
    bad = [
        (b"{not json", json_hdr, 400), (b"\xff\xfe", json_hdr, 400), (b'["false_alarm"]', json_hdr, 400),
        (b'{"label": "maybe"}', json_hdr, 400), (b'{"label": "confirmed", "x": 1}', json_hdr, 400),
        (b"{}", json_hdr, 400), (json.dumps({"label": "confirmed", "pad": "x" * 4000}).encode(), json_hdr, 413),
        (b'{"label": "confirmed"}', {**dashboard.auth, "Content-Type": "text/plain"}, 415),
    ]
    for body, headers, status in bad:
        assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == status, body[:30]
    assert httpx.post(f"{dashboard.url}/api/events/cam-9999/feedback", json={"label": "confirmed"},
                      headers=dashboard.auth, timeout=10).status_code == 404
    assert httpx.get(url, headers=dashboard.auth, timeout=10).status_code == 405
    assert (dashboard.out / "events.jsonl").read_bytes()[:len(before)] == before
    assert not any(r["type"] == "feedback" and r["label"] == "confirmed" for r in dashboard.events_lines())

    r = httpx.post(url, json={"label": "confirmed"}, headers=dashboard.auth, timeout=10)
    assert r.status_code == 200 and r.json()["event"]["feedback"] == "confirmed"
    last = [x for x in dashboard.events_lines() if x["type"] == "feedback"][-1]
    assert last["id"] == ev["id"] and last["label"] == "confirmed"
    listed = next(e for e in dashboard.get_json("/api/events")["events"] if e["id"] == ev["id"])
    assert listed["feedback"] == "confirmed"


def test_metrics_prometheus_text(dashboard: Dashboard) -> None:
    r = httpx.get(dashboard.url + "/metrics", headers=dashboard.auth, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    cam = dashboard.camera
    assert samples[f'vidseq_frames_total{{camera="{cam}"}}'] > 0
    assert samples[f'vidseq_alerts_total{{camera="{cam}"}}'] >= 1
    for name in ("vidseq_dropped_frames_total", "vidseq_reconnects_total", "vidseq_latency_seconds"):
        assert f'{name}{{camera="{cam}"}}' in samples
    assert "# TYPE vidseq_frames_total counter" in r.text


def test_sigterm_stops_cleanly_with_complete_files(dashboard: Dashboard) -> None:
    import av

    proc = dashboard.proc
    assert proc.poll() is None
    with httpx.stream("GET", f"{dashboard.url}/stream/{dashboard.camera}.mjpg", headers=dashboard.auth,
                      timeout=10) as stream:  # an open stream must not hold the shutdown up
        next(stream.iter_bytes())
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, "\n".join(dashboard.log[-20:])
    summary = json.loads((dashboard.out / "monitor_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["frames"] > 0
    records = dashboard.events_lines()  # every line is whole JSON
    alerts = [r for r in records if r["type"] == "alert"]
    assert alerts
    for rec in alerts:
        with av.open(str(dashboard.out / rec["clip"])) as c:
            assert sum(1 for _ in c.decode(video=0)) > 0
    assert not list(dashboard.out.glob(".*part*")), "a temporary clip was left behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(dashboard.url + "/api/status", headers=dashboard.auth, timeout=2)

"""Run the dashboard beside the monitor: bind checks, token policy, uvicorn in a thread, clean shutdown.

Secure by default: the server binds ``127.0.0.1`` unless told otherwise; any other address needs a token
(``--token``, ``$VIDSEQ_WEB_TOKEN`` or ``--token auto`` for a generated one, printed once), and without one
the command refuses to start. Shutdown (Ctrl-C, SIGTERM, ``--duration``) stops the cameras first, so
clips and ``events.jsonl`` are complete, then the server, whose open streams end on the same signal.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidseq.errors import VidseqError
from vidseq.monitor import CameraMonitor, run_cameras
from vidseq.web.app import WebSettings, create_app

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:8080"
TOKEN_ENV = "VIDSEQ_WEB_TOKEN"


class WebError(VidseqError):
    """The dashboard cannot start: bad ``--web`` address, no token for a public address, port taken."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_bind(text: str) -> Bind:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; the host defaults to 127.0.0.1. Port 0 = any free port."""
    text = text.strip()
    host, port = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise WebError(f"--web {text!r}: expected [IPV6]:PORT")
        host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebError(f"--web {text!r}: the port must be a number 0-65535")
    if not host:
        raise WebError(f"--web {text!r}: empty host (use 127.0.0.1, or 0.0.0.0 with a token)")
    return Bind(host, int(port))


def resolve_token(bind: Bind, token: str | None) -> tuple[str | None, bool]:
    """``(token, generated)``: ``--token`` value, ``$VIDSEQ_WEB_TOKEN``, or ``auto`` -> a fresh random one.

    Raises:
        WebError: a non-loopback bind without a token.
    """
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token == "auto":
        return secrets.token_urlsafe(24), True
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{8,256}", token):
        raise WebError("--token must be 8-256 characters of A-Z a-z 0-9 . _ ~ - (or 'auto' to generate one)")
    if token is None and not bind.loopback:
        raise WebError(f"--web {bind.host}:{bind.port} listens beyond this machine: give --token TOKEN "
                       f"(or --token auto, or ${TOKEN_ENV}); without one only loopback addresses are allowed")
    return token, False


class DashboardServer:
    """uvicorn serving ``app`` in a background thread on a socket bound up front (errors are immediate)."""

    def __init__(self, app: Any, bind: Bind) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
        try:
            infos = socket.getaddrinfo(bind.host, bind.port, family, socket.SOCK_STREAM)
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(infos[0][4])
        except OSError as exc:
            raise WebError(f"cannot listen on {bind.host}:{bind.port}: {exc.strerror or exc}") from None
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.bind = bind
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="vidseq-web", daemon=True)

    @property
    def url(self) -> str:
        return self.bind.url(self.port)

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        for _ in range(int(timeout_s / 0.05)):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not self.server.started:
            self.stop()
            raise WebError(f"the dashboard server did not start on {self.bind.host}:{self.port}")

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()


def serve_monitor(cameras: list[CameraMonitor], bind: Bind, settings: WebSettings, stop: threading.Event, *,
                  show_token: bool = False, announce: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Serve the dashboard while the cameras run; return their results once ``stop`` is set.

    ``show_token`` prints a generated token once in the announced URL. The server keeps serving after every source ended (the page stays readable) until Ctrl-C/SIGTERM,
    unless a camera has ``duration_s``.
    """
    app = create_app(cameras, settings, stop)
    server = DashboardServer(app, bind)
    server.start()
    if settings.token is None:
        announce(f"dashboard: {server.url}")
    elif show_token:  # a generated token is printed this once; it is never logged or stored
        announce(f"dashboard: {server.url}?token={settings.token}")
    else:
        announce(f"dashboard: {server.url} (token required: ?token=... or Authorization: Bearer)")
    try:
        return run_cameras(cameras, stop, keep_alive=True,
                           on_idle=lambda: log.warning("every source ended; the dashboard stays up until "
                                                       "Ctrl-C / SIGTERM"))
    finally:
        stop.set()
        server.stop()

"""Live web dashboard for ``vidseq monitor --web [HOST:]PORT``: Starlette app + uvicorn beside the pipeline."""

from __future__ import annotations

from vidseq.web.app import WebSettings, create_app
from vidseq.web.server import (
           DEFAULT_BIND,
           Bind,
           DashboardServer,
           WebError,
           parse_bind,
           resolve_token,
           serve_monitor,
)

__all__ = ["DEFAULT_BIND", "Bind", "DashboardServer", "WebError", "WebSettings", "create_app", "parse_bind",
           "resolve_token", "serve_monitor"]

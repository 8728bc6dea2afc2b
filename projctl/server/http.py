"""HTTP answers: JSON bodies and errors, the dashboard's pages, query parsing."""

from __future__ import annotations

import functools
import http
from importlib import resources
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from projctl.events import dashboard_contract
from projctl.model import PROJECT_FIELDS, STATUSES
from projctl.server.access import canonical_host

_MAX_SINCE_DIGITS = 19


def _json_response(status: http.HTTPStatus, body: Any, *, encoded: bool = False) -> Response:
    payload = body if encoded else orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, payload)


def _api_error(status: http.HTTPStatus, code: str, message: str) -> Response:
    """An API error: ``{"error": code, "message": one line}``, codes stable for scripts."""
    return _json_response(status, {"error": code, "message": message})


#: The dashboard's files (package data in ``projctl/dashboard``), by the path they are served at:
#: the page, its style sheet and each of its ES modules (every ``*.js`` there), nothing else.
_PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    **{
        f"/{file.name}": (file.name, "text/javascript; charset=utf-8")
        for file in (resources.files("projctl") / "dashboard").iterdir()
        if file.name.endswith(".js") and file.is_file()
    },
}


@functools.cache
def _page(name: str) -> bytes:
    body = (resources.files("projctl") / "dashboard" / name).read_bytes()
    if name == "index.html":
        # The page's contract (fields, statuses, event names, timings) is typed once, in
        # Python; "<" is escaped so that no value can ever close the page's <script> block.
        contract = dashboard_contract(project_fields=PROJECT_FIELDS, statuses=STATUSES)
        body = body.replace(b"@CONTRACT@", orjson.dumps(contract).replace(b"<", b"\\u003c"))
    return body


def _page_response(path: str, host: str | None) -> Response:
    """One of the dashboard's files, with headers that allow only its own origin.

    ``host`` is the request's ``Host`` as :func:`canonical_host` gives it (``None``: only
    ``'self'``), so nothing but a host name and port ever reaches the policy."""
    name, content_type = _PAGES[path]
    body = _page(name)
    # 'self' covers ws:// and wss:// of the page's own host in current browsers; the
    # explicit sources keep older ones working.
    sockets = f" ws://{host} wss://{host}" if host is not None and canonical_host(host) else ""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Connection", "close"),
        ]
    )
    return Response(200, "OK", headers, body)


def _parse_since(query: dict[str, list[str]]) -> int | None:
    """``?since=N`` as an int >= 0; ``ValueError`` with a message for anything else."""
    if "since" not in query:
        return None
    raw = query["since"][-1].strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_SINCE_DIGITS:
        raise ValueError(f"since must be a whole number >= 0, got {raw[:40]!r}")
    return int(raw)

"""The dashboard's files as the server serves them: the page's contract, typed once in Python
and embedded in the page, and its ES modules, each served as JavaScript (no build step)."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import orjson

import projctl
from projctl import events
from projctl.events import dashboard_contract
from projctl.model import EDITABLE_FIELDS, PROJECT_FIELDS, STATUSES, Project
from projctl.store import ProjectStore

from .test_server import run, serving

PAGE_FILES = Path(projctl.__file__).parent / "dashboard"
CONTRACT_BLOCK = re.compile(rb'<script type="application/json" id="contract">([^<]*)</script>')
MODULE_SCRIPT = re.compile(rb'<script type="module" src="/([a-z_]+\.js)"></script>')
PRELOAD = re.compile(rb'<link rel="modulepreload" href="/([a-z_]+\.js)">')
IMPORT = re.compile(r'^import [^;]* from "\./([a-z_]+\.js)";$', re.MULTILINE)


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 GET on loopback: the status, headers (lower-case names) and body."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(request.encode())
        response = b""
        while chunk := raw.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def page_contract() -> dict[str, Any]:
    return dashboard_contract(project_fields=PROJECT_FIELDS, statuses=STATUSES)


def test_the_contract_is_the_models_and_the_events_own() -> None:
    contract = page_contract()
    project = Project("proj_x", "n", "api", "created", "ann", "", "t", "t")
    assert contract["project_fields"] == list(project.to_dict())
    assert set(EDITABLE_FIELDS) < set(contract["project_fields"])
    assert contract["statuses"] == list(STATUSES)
    assert contract["events"] == {
        "created": "project_created",
        "updated": "project_updated",
        "deleted": "project_deleted",
    }
    assert sorted(contract["events"].values()) == sorted(events.EVENT_TYPES)
    # The page tells emitted events by the very pattern projctl emit enforces.
    assert contract["emitted_type_pattern"] == events.EMIT_TYPE_PATTERN.pattern
    pattern = re.compile(contract["emitted_type_pattern"])
    assert all(pattern.fullmatch(name) for name in events.CONVENTIONAL_EVENT_TYPES)
    assert contract["projects_messages"] == list(events.PROJECTS_MESSAGE_TYPES)
    assert contract["highlight_ms"] == events.HIGHLIGHT_SECONDS * 1000 == 10_000
    assert contract["deleted_linger_ms"] == events.DELETED_LINGER_SECONDS * 1000 == 5_000
    assert (contract["backoff_first_ms"], contract["backoff_max_ms"]) == (500, 10_000)
    # Two of the longest waits without a server: then the page says where to look.
    assert contract["lost_hint_ms"] == 20_000
    # JSON as it is: what the page reads is what Python typed.
    assert orjson.loads(orjson.dumps(contract)) == contract


def test_the_served_page_embeds_the_contract(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            for path in ("/", "/index.html"):
                status, head, body = await asyncio.to_thread(http_get, server.port, path)
                assert (status, head["content-type"]) == (200, "text/html; charset=utf-8")
                blocks = CONTRACT_BLOCK.findall(body)
                assert len(blocks) == 1, body[:400]
                assert orjson.loads(blocks[0]) == page_contract()
                assert b"@CONTRACT@" not in body

    run(scenario())


def test_every_module_the_page_imports_is_served_as_javascript(store: ProjectStore) -> None:
    """From the page's one module script, every module it imports, and nothing else."""

    async def scenario() -> None:
        async with serving(store) as server:
            page = (await asyncio.to_thread(http_get, server.port, "/"))[2]
            entries = MODULE_SCRIPT.findall(page)
            assert [entry.decode() for entry in entries] == ["dashboard.js"]
            pending = ["dashboard.js"]
            reached: set[str] = set()
            while pending:
                name = pending.pop()
                if name in reached:
                    continue
                reached.add(name)
                status, head, body = await asyncio.to_thread(http_get, server.port, "/" + name)
                assert (status, head["content-type"]) == (200, "text/javascript; charset=utf-8")
                assert "script-src 'self'" in head["content-security-policy"]
                assert head["x-content-type-options"] == "nosniff"
                assert body == (PAGE_FILES / name).read_bytes()
                pending.extend(IMPORT.findall(body.decode()))
            # Every module in the folder is used; each of the five jobs has its own.
            assert reached == {path.name for path in PAGE_FILES.glob("*.js")}
            # The page preloads each module the entry imports (one round trip, not three).
            preloaded = [name.decode() for name in PRELOAD.findall(page)]
            assert sorted(preloaded) == sorted(reached - {"dashboard.js"})
            assert {"connection.js", "state.js", "render.js", "filters.js", "token.js"} <= reached
            # Only the page's own files: no other name, no other folder.
            for path in ("/nothing.js", "/state.py", "/../server.py", "/%2e%2e/server.py"):
                assert (await asyncio.to_thread(http_get, server.port, path))[0] == 404, path

    run(scenario())


def test_the_page_applies_emitted_events_in_seq_order() -> None:
    """Without a browser: the connection hands every event of a valid emitted type to the state
    (so its seq counts and the next event is no gap), and the contract's lifecycle events stay
    the only ones that change a project."""
    connection = (PAGE_FILES / "connection.js").read_text()
    state = (PAGE_FILES / "state.js").read_text()
    contract = (PAGE_FILES / "contract.js").read_text()
    assert "contract.emitted_type_pattern" in contract
    assert "if (!EVENT_TYPES.has(type) && !emitted) return;" in connection
    assert "if (emitted) applyEmitted(type, message, seq);" in connection
    applied = state.split("export function applyEmitted", 1)[1].split("\n}\n", 1)[0]
    assert "model.lastSeq = seq" in applied
    assert "model.projects.set" not in applied  # it changes no project

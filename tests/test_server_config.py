"""The one mapping from settings to a server's config, for ``serve`` and the background server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import projctl
from projctl import config
from projctl.runtime import ServerLaunch, StartOptions
from projctl.server import ServerConfig
from projctl.server import __main__ as server_main


def _launch(db_path: Path) -> list[str]:
    options = StartOptions(host="127.0.0.1", port=0, idle_timeout=30.0, port_fallback=True)
    return ServerLaunch(db_path, options).argv()[3:]


def _run_background_main(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, ServerConfig]:
    """What ``python -m projctl.server`` would serve, caught before it listens."""
    served: list[tuple[Any, ServerConfig]] = []
    monkeypatch.setattr(
        server_main, "run_server", lambda store, cfg, **_: served.append((store, cfg))
    )
    assert server_main.main(_launch(db_path)) == 0
    assert len(served) == 1
    return served[0]


def test_background_server_keeps_the_journal_limit_setting(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROJCTL_JOURNAL_LIMIT", "7")
    store, cfg = _run_background_main(db_path, monkeypatch)
    # REST writes go through this store: it trims the journal to the setting, and a
    # remote ``info`` reports it.
    assert store.journal_limit == 7
    assert cfg.journal_window == 7


def test_background_server_and_serve_map_settings_alike(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROJCTL_JOURNAL_LIMIT", "9")
    monkeypatch.setenv("PROJCTL_MAX_CONNECTIONS", "33")
    _, background = _run_background_main(db_path, monkeypatch)
    serving = projctl.open_database(db_path, broadcast=False)._server_config(
        "127.0.0.1", 0, (), 30.0, False
    )
    for name in ("host", "journal_window", "idle_timeout", "read_tokens", "allow_origins"):
        assert getattr(background, name) == getattr(serving, name), name
    assert background.journal_window == 9


def test_server_config_defaults_are_the_settings_defaults() -> None:
    assert ServerConfig().host == config.DEFAULT_HOST
    assert ServerConfig().port == config.DEFAULT_PORT
    assert ServerConfig().journal_window == config.DEFAULT_JOURNAL_LIMIT

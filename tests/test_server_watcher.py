"""The journal-file watcher: it survives its own failures without flooding the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from projctl.store import FileVersion, ProjectStore

from .conftest import until
from .test_server import serving


def test_a_repeated_watcher_failure_is_logged_once_then_on_change_and_recovery(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure: list[str | None] = ["a bug in the watcher"]
    calls = [0]
    real_file_version = store.file_version

    def file_version() -> FileVersion:
        calls[0] += 1
        if failure[0] is not None:
            raise RuntimeError(failure[0])
        return real_file_version()

    monkeypatch.setattr(store, "file_version", file_version)

    def failed_rounds() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "watcher failed" in r.getMessage()]

    async def main() -> None:
        async with serving(store, poll_interval=0.01, gap_grace=60):
            await until(lambda: calls[0] >= 10, what="ten failed rounds")
            records = failed_rounds()
            assert len(records) == 1
            assert records[0].exc_info is not None, "the first time, with its traceback"
            assert str(records[0].exc_info[1]) == "a bug in the watcher"

            failure[0] = "another bug"
            seen = calls[0]
            await until(lambda: calls[0] >= seen + 10, what="ten more failed rounds")
            assert len(failed_rounds()) == 2

            failure[0] = None
            await until(
                lambda: any("works again" in r.getMessage() for r in caplog.records),
                what="the recovery logged",
            )
            assert len(failed_rounds()) == 2

    caplog.set_level(logging.INFO, logger="projctl.server")
    asyncio.run(asyncio.wait_for(main(), 60))

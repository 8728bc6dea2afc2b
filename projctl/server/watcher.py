"""The journal-file watcher: commits nobody forwarded, read back from the database file."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from projctl.backend import ServedStorage
from projctl.errors import StoreError
from projctl.sequencer import Sequencer
from projctl.server.config import ServerConfig

log = logging.getLogger("projctl.server")


class JournalWatcher:
    """Watches ``store``'s file for commits the ``sequencer`` cannot explain and hands what the
    journal holds to ``send_to_all``; counts what failed (``read_failures``, ``failures``)."""

    def __init__(
        self,
        store: ServedStorage,
        sequencer: Sequencer,
        config: ServerConfig,
        *,
        send_to_all: Callable[[Iterable[bytes]], None],
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        self.config = config
        self._send_to_all = send_to_all
        #: Journal reads that failed, and watcher rounds that raised.
        self.read_failures = 0
        self.failures = 0
        #: The last journal read error logged, so that one bad file is logged once.
        self._read_error: str | None = None

    async def reconcile(self) -> None:
        """Read the journal and broadcast every committed event not broadcast yet.

        A file that cannot be read (garbage, a malformed entry another program wrote,
        an empty file being rewritten in place) is logged once, not at every attempt;
        delivery resumes when it is fixed. A database that holds fewer events than were
        sent is an older copy put back: everyone gets a ``resync``, and ``seq`` goes on
        from the last one sent.
        """
        try:
            state = await asyncio.to_thread(self.store.read_state)
            if self.sequencer.is_behind(state):
                # A read that began before the last forward came is merely stale: only a
                # read begun now tells a restore.
                state = await asyncio.to_thread(self.store.read_state)
        except StoreError as error:
            self.read_failures += 1
            self._read_problem(
                logging.ERROR, f"cannot read the journal: {error}; retrying until it is fixed"
            )
            return
        if not state.database_id and self.sequencer.database_id:
            self._read_problem(
                logging.WARNING, "the database file is gone; waiting for it to come back"
            )
            return
        if self._read_error is not None:
            self._read_error = None
            log.info("the journal is readable again")
        if self.sequencer.is_behind(state):
            log.warning(
                "the database went back from seq %d to %d (an older copy was put back): "
                "every subscriber starts over; seq goes on from %d",
                self.sequencer.last_seq,
                state.latest_seq,
                self.sequencer.last_seq,
            )
            self._send_to_all(self.sequencer.restored(state))
            return
        self._send_to_all(self.sequencer.catch_up(state))

    def _read_problem(self, level: int, message: str) -> None:
        """Log a problem reading the database once, not at every round while it lasts."""
        if message != self._read_error:
            self._read_error = message
            log.log(level, "%s", message)

    async def watch(self) -> None:
        """Notice commits whose forward never came: the file changed and no forward explains it.

        Runs for the server's whole life: whatever one round raises is logged and the
        next round goes on, so no database content can stop the watcher. A failure that
        repeats is logged once, with its traceback; then only when it changes or stops.
        """
        unexplained_since: float | None = None
        failing: str | None = None
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                version = self.store.file_version()
                if self.sequencer.is_explained(version):
                    unexplained_since = None
                else:
                    now = time.monotonic()
                    if unexplained_since is None:
                        unexplained_since = now
                    elif now - unexplained_since >= self.config.gap_grace:
                        unexplained_since = None
                        await self.reconcile()
            except Exception as error:
                self.failures += 1
                failure = f"{type(error).__qualname__}: {error}"
                if failure != failing:
                    failing = failure
                    log.exception("the database watcher failed a round; it goes on")
                continue
            if failing is not None:
                failing = None
                log.info("the database watcher works again")

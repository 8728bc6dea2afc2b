"""Domain errors raised by the core modules.

Core modules raise these; only the command-line layer turns them into a message
and an exit code. Each message is one line that makes sense on its own.
Stdlib only: every module may import this one.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptDatabaseError",
    "DatabaseChangedError",
    "EmptyDatabaseError",
    "InvalidInputError",
    "LockTimeoutError",
    "NotFoundError",
    "ProjctlError",
    "ProjectNotFoundError",
    "ServerError",
    "ServerNotAnsweringError",
    "ServerUnavailableError",
    "StoreError",
]


class ProjctlError(Exception):
    """Base class of every error projctl reports to its user."""


class InvalidInputError(ProjctlError, ValueError):
    """A value given by the user breaks a rule (too long, wrong format, ...)."""


class AmbiguousReferenceError(InvalidInputError):
    """A name several projects share, where one project is meant."""


class NameTakenError(InvalidInputError):
    """A write asked for a name no other project has (``unique``), and another has it:
    nothing was written. Checked in the write's own transaction."""


class IdempotencyKeyReusedError(InvalidInputError):
    """An idempotency key already used for a different request: its first result stands."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request; "
            "use a new key for a new request"
        )
        self.key = key


class PreconditionFailedError(InvalidInputError):
    """A change made on condition that the project is still the version the caller saw
    (``If-Match``), and it is not: nothing was written."""


class ConfigError(InvalidInputError):
    """A setting (an option or a ``PROJCTL_*`` variable) has a value that is not accepted."""


class NotFoundError(ProjctlError, LookupError):
    """Something asked for does not exist (a project, a server's log)."""


class ProjectNotFoundError(NotFoundError):
    """No project has the given id."""

    def __init__(self, project_id: str, *, looked_up_by: str = "id") -> None:
        super().__init__(f"no project with {looked_up_by} {project_id!r}")
        self.project_id = project_id


class StoreError(ProjctlError):
    """The database file cannot be read, written or locked."""


class CorruptDatabaseError(StoreError):
    """The database file exists but is not a readable projctl database; it is left untouched."""


class EmptyDatabaseError(CorruptDatabaseError):
    """The database file is empty where a database was: being rewritten, or truncated.

    A reader that follows the file (the server) takes it as transient and reads again.
    """


class DatabaseChangedError(StoreError):
    """Another program changed the database file while a change was being made; nothing
    was written."""


class LockTimeoutError(StoreError):
    """Another process held a lock for longer than we were willing to wait."""


class NotThisMachinesError(ProjctlError):
    """A command that manages this machine's server (stop, logs) asked of a team server,
    which runs elsewhere and is stopped and read where it runs."""


class ServerError(ProjctlError):
    """The broadcast server cannot be started, reached or stopped."""


class ServerUnavailableError(ServerError):
    """The server named by the runtime state does not answer: it is gone, or not there yet.

    The one server failure worth retrying after a pause; every other :class:`ServerError`
    is permanent.
    """


class ServerNotAnsweringError(ServerError):
    """The server is there (it took the request) but did not answer in time: hung, stopped
    or swamped. Never a reason to start another one (it still holds the database's server
    lock); a subscriber may retry after a pause."""

    def __init__(self, message: str, *, pid: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.url = url

"""Every ``PROJCTL_*`` setting: its name, default and rule, parsed and validated once.

:func:`load_settings` reads the environment (and the command-line values that
override it) into one frozen :class:`Settings`. A value that breaks its rule
raises :class:`~projctl.errors.ConfigError` with one line that names where the
value came from (the variable or the option), the value itself, and what is
accepted. Nothing else in projctl reads a ``PROJCTL_*`` variable.

The ``parse_*`` functions are the rules, reused for options that are not
settings (``watch --timeout``, ``--count``): a number is always finite, a port
always 0-65535, whatever the source.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from projctl.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from projctl._contexts import Context, Contexts

__all__ = [
    "CA_FILE",
    "DB",
    "DEBUG",
    "DEFAULT_HOST",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_JOURNAL_LIMIT",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DURATION_RULE",
    "HOST",
    "IDLE_TIMEOUT",
    "JOURNAL_LIMIT",
    "MAX_CONNECTIONS",
    "NATS_CREDS",
    "NO_BROADCAST",
    "NO_COLOR",
    "OWNER",
    "PORT",
    "REQUIRE_TOKEN",
    "TOKEN",
    "UNIQUE_NAMES",
    "URL",
    "VARIABLES",
    "DbSource",
    "NatsLocation",
    "Settings",
    "Variable",
    "check_db_folder",
    "debug_enabled",
    "default_db_path",
    "http_address",
    "load_settings",
    "login_name",
    "parse_context_name",
    "parse_count",
    "parse_db_location",
    "parse_db_path",
    "parse_file",
    "parse_flag",
    "parse_host",
    "parse_port",
    "parse_seconds",
    "parse_token",
    "parse_url",
    "read_token_file",
]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8000
DEFAULT_IDLE_TIMEOUT = 900.0
DEFAULT_JOURNAL_LIMIT = 1000
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 4096

#: Where the database path came from, as ``projctl info`` will say it.
DbSource = Literal["--db", "PROJCTL_DB", "context", "default"]


class Variable(NamedTuple):
    """One environment variable projctl reads: the README and ``--help`` list these.

    Each is named once, here; the code reads it by its constant (``OWNER.name``).
    """

    name: str
    meaning: str
    default: str
    #: Holds a file's path: bytes that are not UTF-8 still name a file.
    path: bool = False


DB = Variable(
    "PROJCTL_DB", "database file, like --db", "<user data dir>/projctl/projects.json", path=True
)
OWNER = Variable("PROJCTL_OWNER", "owner of new projects", "your user name")
HOST = Variable("PROJCTL_HOST", "address of the broadcast server", DEFAULT_HOST)
PORT = Variable(
    "PROJCTL_PORT",
    "port of the broadcast server (0: any free)",
    f"{DEFAULT_PORT} for the default database when free, else any free port",
)
UNIQUE_NAMES = Variable(
    "PROJCTL_UNIQUE_NAMES", "1: refuse a name another project has, like --unique", "unset"
)
NO_BROADCAST = Variable(
    "PROJCTL_NO_BROADCAST", "1: commit and journal only, contact no server", "unset"
)
IDLE_TIMEOUT = Variable(
    "PROJCTL_IDLE_TIMEOUT",
    "how long an idle background server waits before it stops (30s, 15m, 1h)",
    f"{DEFAULT_IDLE_TIMEOUT:g}",
)
JOURNAL_LIMIT = Variable(
    "PROJCTL_JOURNAL_LIMIT", "how many events the journal keeps", str(DEFAULT_JOURNAL_LIMIT)
)
REQUIRE_TOKEN = Variable(
    "PROJCTL_REQUIRE_TOKEN", "1: subscribers need the token, even on loopback", "unset"
)
MAX_CONNECTIONS = Variable(
    "PROJCTL_MAX_CONNECTIONS", "open connections a server accepts", str(DEFAULT_MAX_CONNECTIONS)
)
URL = Variable("PROJCTL_URL", "a team server (wss://host:port) to run commands against", "unset")
TOKEN = Variable("PROJCTL_TOKEN", f"the token for {URL.name} (read or write)", "unset")
TOKEN_FILE = Variable(
    "PROJCTL_TOKEN_FILE",
    f"a file (mode 0600) holding the token for {URL.name}, like --token-file",
    "unset",
    path=True,
)
CONTEXT = Variable(
    "PROJCTL_CONTEXT", "the context to use, like --context (see projctl context)", "the current one"
)
CA_FILE = Variable(
    "PROJCTL_CA_FILE", f"a CA certificate file to trust for {URL.name}", "system CAs", path=True
)
NATS_CREDS = Variable(
    "PROJCTL_NATS_CREDS",
    "a NATS credentials file for a nats:// or tls:// database",
    "unset",
    path=True,
)
DEBUG = Variable("PROJCTL_DEBUG", "1: show a traceback for unexpected failures", "unset")
NO_COLOR = Variable("NO_COLOR", "no colour in tables", "unset")

VARIABLES: tuple[Variable, ...] = (
    DB,
    OWNER,
    HOST,
    PORT,
    UNIQUE_NAMES,
    NO_BROADCAST,
    IDLE_TIMEOUT,
    JOURNAL_LIMIT,
    REQUIRE_TOKEN,
    MAX_CONNECTIONS,
    URL,
    TOKEN,
    TOKEN_FILE,
    CA_FILE,
    CONTEXT,
    NATS_CREDS,
    DEBUG,
    NO_COLOR,
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_HOST_MAX = 253
_TOKEN_MAX = 4096
_CHARACTER_NAMES = {"\r": "a carriage return", "\n": "a line feed", "\t": "a tab", " ": "a space"}


def _refuse(source: str, raw: str, accepted: str) -> ConfigError:
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    return ConfigError(f"{source}={shown!r} is not accepted: expected {accepted}")


def parse_port(raw: str, source: str) -> int:
    """A TCP port: a whole number from 0 (any free port) to 65535."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise _refuse(source, raw, "a whole number from 0 to 65535")
    return int(text)


def parse_count(raw: str, source: str, *, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < minimum:
        raise _refuse(source, raw, f"a whole number of at least {minimum}")
    return int(text)


# The patterns below are text, compiled by ``re`` at their first use (and cached there): every
# command imports this module, few need them.

#: What :func:`parse_seconds` accepts, as its error says it.
DURATION_RULE = "a duration, 0 or more: seconds (30, 2.5) or with units (30s, 5m, 1h, 1m30s)"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+"
_DURATION_PART = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)"


def parse_seconds(raw: str, source: str) -> float:
    """A duration in seconds, as people write it for kubectl: plain seconds (``30``, ``2.5``)
    or numbers with units (``30s``, ``5m``, ``1h``, ``1m30s``, ``500ms``). Finite and >= 0:
    never ``nan`` or ``inf``."""
    text = raw.strip().lower()
    if re.fullmatch(_DURATION, text):
        parts = re.findall(_DURATION_PART, text)
        value = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    else:
        try:
            value = float(text) if text.isascii() else math.nan
        except ValueError:
            value = math.nan
    if not math.isfinite(value) or value < 0:
        raise _refuse(source, raw, DURATION_RULE)
    return value


def parse_flag(raw: str, source: str) -> bool:
    """A yes/no switch: ``1 true yes on`` or ``0 false no off`` (empty: off)."""
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _refuse(source, raw, "1, true, yes, on, or 0, false, no, off")


def parse_host(raw: str, source: str) -> str:
    """A host name or IP address to listen on or connect to."""
    host = raw.strip()
    if (
        not host
        or len(host) > _HOST_MAX
        or not host.isprintable()
        or any(char.isspace() or char in "/?#@" for char in host)
    ):
        raise _refuse(source, raw, "a host name or IP address, like localhost or 127.0.0.1")
    return host


#: The schemes a team server's address may have, and the one it is known by: the dashboard's
#: ``https://`` address names the same server as its feed's ``wss://``.
_URL_SCHEMES = {"wss": "wss", "https": "wss", "ws": "ws", "http": "ws"}


def http_address(ws_url: str) -> str:
    """The HTTP address (the API's and the dashboard's) of the server whose feed is
    ``ws_url``: ``wss://host:port[/ws]`` is ``https://host:port``, ``ws://`` is ``http://``."""
    scheme, _, rest = ws_url.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.rstrip('/').removesuffix('/ws')}"


def parse_url(raw: str, source: str) -> str:
    """A team server's address as ``wss://host:port`` (or ``ws://`` for a plain one), no
    path; ``https://`` and ``http://`` name the same server."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        raise _refuse(source, raw, "wss://HOST:PORT (or ws://HOST:PORT)") from None
    if parts.scheme not in _URL_SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise _refuse(source, raw, "wss://HOST:PORT (or ws://HOST:PORT)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _refuse(source, raw, "an address without a query, fragment or user")
    scheme = _URL_SCHEMES[parts.scheme]
    return f"{scheme}://{parts.netloc}" if port is not None else f"{scheme}://{parts.hostname}"


def parse_token(raw: str, source: str) -> str:
    """A token: visible ASCII characters only (what an ``Authorization`` header carries),
    at most 4096 of them. A refused token is never shown, not even in part: the message
    says what is wrong and where (a secrets file saved on Windows ends in a carriage return).
    """
    for position, char in enumerate(raw, start=1):
        if not "!" <= char <= "~":
            what = _CHARACTER_NAMES.get(
                char, "a control character" if char.isascii() else "a non-ASCII character"
            )
            where = "at its end" if position == len(raw) else f"at position {position}"
            raise ConfigError(
                f"{source} is not accepted: a token is visible ASCII characters only, and this "
                f"one holds {what} {where} (the value is not shown)"
            )
    if len(raw) > _TOKEN_MAX:
        raise ConfigError(
            f"{source} is not accepted: a token is at most {_TOKEN_MAX} characters, this one "
            f"has {len(raw)} (the value is not shown)"
        )
    return raw


def parse_file(raw: str, source: str) -> Path:
    """A readable file's path, ``~`` expanded."""
    path = Path(os.path.expanduser(raw))
    if not path.is_file():
        raise _refuse(source, raw, "the path of a readable file")
    return path


#: Database locations of the NATS JetStream backend (``tls://``: the same over TLS).
JETSTREAM_SCHEMES = ("nats", "tls")
_SCHEME = r"([A-Za-z][A-Za-z0-9+.-]*)://"
#: A JetStream database's name: one subject token, and a stream name once prefixed.
_NATS_NAME = r"[A-Za-z0-9_-]{1,64}"
_NATS_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?"
NATS_DEFAULT_PORT = 4222
NATS_DEFAULT_TIMEOUT = 10.0
NATS_LOCATION = "nats://HOST:PORT[,HOST:PORT...]/NAME[?replicas=N&timeout=SECONDS]"


class NatsLocation(NamedTuple):
    """A NATS JetStream database: its servers, name and options, parsed once.

    Credentials from the URL's user info are kept out of :func:`repr` and of
    :attr:`display`, the only form of the location any message shows. (A named tuple: every
    command imports this module, and a dataclass would cost each its code generation.)
    """

    scheme: str
    servers: tuple[str, ...]
    name: str
    replicas: int | None = None
    timeout: float = NATS_DEFAULT_TIMEOUT
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"NatsLocation(scheme={self.scheme!r}, servers={self.servers!r}, name={self.name!r}, "
            f"replicas={self.replicas!r}, timeout={self.timeout!r})"
        )

    @property
    def display(self) -> str:
        """``nats://HOST:PORT,.../NAME``: the location without credentials or options."""
        hosts = ",".join(server.split("://", 1)[1] for server in self.servers)
        return f"{self.scheme}://{hosts}/{self.name}"


def _shown(raw: str) -> str:
    """A location as a message may show it: user info (credentials) replaced by ``***``."""
    match = re.match(_SCHEME, raw)
    if match is not None:
        rest = raw[match.end() :]
        authority, slash, tail = rest.partition("/")
        if "@" in authority:
            raw = f"{match.group(0)}***@{authority.rpartition('@')[2]}{slash}{tail}"
    return raw if len(raw) <= 60 else raw[:57] + "..."


def parse_nats_location(raw: str, source: str) -> NatsLocation:
    """``nats://[USER:PASSWORD@|TOKEN@]HOST:PORT[,HOST:PORT...]/NAME[?replicas=N&timeout=S]``
    (or ``tls://``). The port defaults to 4222; ``NAME`` is 1-64 of ``A-Z a-z 0-9 _ -``."""
    from urllib.parse import parse_qsl, unquote

    def refuse(accepted: str) -> ConfigError:
        return ConfigError(f"{source}={_shown(raw)!r} is not accepted: expected {accepted}")

    match = re.match(_SCHEME, raw)
    assert match is not None
    scheme = match.group(1).lower()
    rest = raw[match.end() :]
    rest, _, query = rest.partition("?")
    if "#" in query or "#" in rest:
        raise refuse(f"{NATS_LOCATION}, without a fragment")
    authority, slash, name = rest.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    if not at:
        hosts, credentials = authority, ""
    if not slash or re.fullmatch(_NATS_NAME, name) is None:
        raise refuse(f"{NATS_LOCATION} with NAME 1-64 of A-Z, a-z, 0-9, '_' or '-'")
    servers = []
    for host in hosts.split(","):
        found = re.fullmatch(_NATS_HOST, host.strip())
        if found is None or (found.group(2) is not None and int(found.group(2)) > 65535):
            raise refuse(NATS_LOCATION)
        port = int(found.group(2)) if found.group(2) else NATS_DEFAULT_PORT
        servers.append(f"{scheme}://{found.group(1)}:{port}")
    user = password = token = None
    if credentials:
        name_part, colon, secret = credentials.partition(":")
        if colon:
            user, password = unquote(name_part), unquote(secret)
        else:
            token = unquote(name_part)
    replicas = None
    timeout = NATS_DEFAULT_TIMEOUT
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "replicas":
            replicas = parse_count(value, f"{source} replicas", minimum=1)
            if replicas > 5:
                raise refuse("replicas from 1 to 5")
        elif key == "timeout":
            timeout = parse_seconds(value, f"{source} timeout")
            if timeout <= 0:
                raise refuse("a timeout of more than 0 seconds")
        else:
            raise refuse(f"{NATS_LOCATION}; {key!r} is not an option")
    return NatsLocation(scheme, tuple(servers), name, replicas, timeout, user, password, token)


def parse_db_location(raw: str, source: str) -> Path | NatsLocation:
    """A database location, which chooses the storage: a path or a ``file:`` URL is a
    TinyDB file (:func:`parse_db_path`); ``nats://`` and ``tls://`` name a NATS JetStream
    stream (:func:`parse_nats_location`); any other ``scheme://`` is refused."""
    scheme = re.match(_SCHEME, raw)
    if scheme is not None and scheme.group(1).lower() in JETSTREAM_SCHEMES:
        if "\0" in raw or not raw.isprintable():
            raise ConfigError(f"{source}={_shown(raw)!r} is not accepted: expected {NATS_LOCATION}")
        return parse_nats_location(raw, source)
    return parse_db_path(raw, source)


def parse_db_path(raw: str, source: str) -> Path:
    """A database file's location: a path or a ``file:`` URL (not empty, ``~`` expanded,
    made absolute). A ``nats://`` or ``tls://`` location names no file (a ConfigError here:
    :func:`parse_db_location` takes it), and any other ``scheme://`` is refused: neither is
    ever taken for a folder to create."""
    if not raw.strip():
        raise _refuse(source, raw, "the path of a database file")
    if "\0" in raw:
        raise _refuse(source, raw, "a path without NUL characters")
    if raw.startswith("file:"):
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(raw)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment or not path:
            raise _refuse(source, raw, "a file: URL naming a file on this machine")
        raw = path
    elif scheme := re.match(_SCHEME, raw):
        name = scheme.group(1).lower()
        if name in JETSTREAM_SCHEMES:
            raise ConfigError(f"{source}={_shown(raw)!r}: a NATS JetStream database is not a file")
        raise _refuse(source, raw, "a database file's path or a file: URL")
    return Path(os.path.abspath(os.path.expanduser(raw)))


def default_db_path() -> Path:
    """``<user data dir>/projctl/projects.json`` (XDG on Linux, the platform's own elsewhere)."""
    import platformdirs  # only needed when neither --db nor PROJCTL_DB is given

    return Path(platformdirs.user_data_dir("projctl", appauthor=False)) / "projects.json"


def check_db_folder(settings: Settings) -> None:
    """Raise :class:`StoreError` when the folder of a database path given by ``--db`` or
    ``PROJCTL_DB`` is not an existing folder: a mistyped path must not become a tree of new
    folders. Only the default data folder is created (by the first change)."""
    if settings.url is not None or settings.db_source == "default":
        return
    folder = settings.db_path.parent
    if folder.is_dir():
        return
    if os.path.lexists(folder):
        raise StoreError(
            f"{folder}, the folder of the database ({settings.db_source}), is not a folder"
        )
    raise StoreError(
        f"folder {folder} does not exist (the database's, from {settings.db_source}): create "
        "it first; projctl creates only its default data folder"
    )


def login_name() -> str:
    """The name of the user running projctl: the default owner when ``PROJCTL_OWNER`` is unset."""
    # What getpass.getuser() does, without importing getpass (and with it termios) into
    # every command that creates a project.
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        user = os.environ.get(name)
        if user:
            return user
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except (OSError, KeyError):
        # No login name and no passwd entry (a bare container, say).
        return f"uid-{os.getuid()}"


def _is_utf8(value: str) -> bool:
    # The environment is decoded with surrogateescape: bytes that are not UTF-8 arrive
    # as lone surrogates, which no JSON document, header or terminal can hold as text.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``PROJCTL_DEBUG`` asks for a traceback on an unexpected failure.

    Read on its own, not through :func:`load_settings`: a failure may come before the
    settings load or from loading them. A value that breaks the flag rule means off.
    """
    env = os.environ if environ is None else environ
    try:
        return parse_flag(env.get(DEBUG.name, ""), DEBUG.name)
    except ConfigError:
        return False


class Settings(NamedTuple):
    """Every setting of one projctl run, validated. Build it with :func:`load_settings`.

    A named tuple, as every command builds one (a dataclass would cost each command its
    code generation); its :func:`repr` leaves out the token."""

    db_path: Path
    db_source: DbSource
    #: ``PROJCTL_OWNER`` as given (the model validates it when a project is created);
    #: ``None`` when unset: new projects then belong to the user running projctl.
    owner: str | None
    host: str
    #: The port asked for; ``None``: the server picks (see :attr:`preferred_port`).
    port: int | None
    no_broadcast: bool
    idle_timeout: float
    journal_limit: int
    lock_timeout: float
    debug: bool
    require_token: bool
    max_connections: int
    #: A team server to run commands against (``PROJCTL_URL`` or ``--url``); ``None``: local.
    url: str | None = None
    url_source: str = ""
    #: The token for :attr:`url`.
    token: str | None = None
    #: A CA certificate file to trust for :attr:`url` (``PROJCTL_CA_FILE``), and for a
    #: ``tls://`` JetStream database.
    ca_file: str | None = None
    #: Refuse to create or rename a project to a name another one has (``PROJCTL_UNIQUE_NAMES``).
    unique_names: bool = False
    #: The context in force (``projctl context``), and what chose it (``--context``,
    #: ``PROJCTL_CONTEXT`` or ``current``); ``None``: none.
    context: str | None = None
    context_source: str = ""
    #: Where :attr:`token` came from (``PROJCTL_TOKEN``, ``--token-file``, a context ...).
    token_source: str = ""
    #: A JetStream database (``nats://`` or ``tls://``); :attr:`db_path` is then unused.
    nats: NatsLocation | None = None
    #: A NATS credentials file (``PROJCTL_NATS_CREDS``).
    nats_creds: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'***' if name == 'token' and value is not None else repr(value)}"
            for name, value in zip(self._fields, self, strict=True)
        )
        return f"Settings({shown})"

    @property
    def preferred_port(self) -> int:
        """The port a server tries when none was asked for: the default database keeps the
        seed's ``ws://localhost:8000/ws`` when 8000 is free; any other database takes a free
        port, so databases on one host never collide."""
        return DEFAULT_PORT if self.db_source == "default" else 0


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    db: str | None = None,
    host: str | None = None,
    port: str | None = None,
    no_broadcast: bool | None = None,
    require_token: bool | None = None,
    url: str | None = None,
    context: str | None = None,
    token_file: str | None = None,
) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``); options given here win.

    Where the database is: ``--db`` or ``--url``; else a context (``--context``,
    ``PROJCTL_CONTEXT``); else ``PROJCTL_DB`` or ``PROJCTL_URL``; else the current context
    (``projctl context use``); else the default database.

    Raises :class:`~projctl.errors.ConfigError` for the first value that breaks its rule.
    An empty variable counts as unset, except ``PROJCTL_DB``: an empty database path
    is a mistake (a script's unset variable), not a request for the default.
    """
    env = os.environ if environ is None else environ
    chosen, context_source = _chosen_context(env, context, db=db, url=url)
    db_source: DbSource
    location: Path | NatsLocation | None
    if db is not None:
        location, db_source = parse_db_location(db, "--db"), "--db"
    elif chosen is not None and chosen.db is not None:
        location = parse_db_location(chosen.db, f"context {chosen.name}")
        db_source = "context"
    elif "PROJCTL_DB" in env and (chosen is None or chosen.url is None):
        location, db_source = parse_db_location(env["PROJCTL_DB"], "PROJCTL_DB"), "PROJCTL_DB"
    else:
        location, db_source = None, "default"  # chosen below, once the team server is known

    def variable(setting: Variable) -> str | None:
        value = env.get(setting.name)
        if value and not setting.path and not _is_utf8(value):
            raise ConfigError(f"{setting.name} is not valid UTF-8")
        return value if value else None

    def flag(setting: Variable) -> bool:
        return parse_flag(env.get(setting.name, ""), setting.name)

    raw_port = port if port is not None else variable(PORT)
    raw_owner = variable(OWNER)
    raw_limit = variable(JOURNAL_LIMIT)
    raw_idle = variable(IDLE_TIMEOUT)
    raw_connections = variable(MAX_CONNECTIONS)
    raw_url, url_source = (url, "--url") if url is not None else (variable(URL), URL.name)
    raw_ca, ca_source = variable(CA_FILE), CA_FILE.name
    raw_token_file, token_file_source = (
        (token_file, "--token-file")
        if token_file is not None
        else (variable(TOKEN_FILE), TOKEN_FILE.name)
    )
    if chosen is not None and url is None and db is None:
        where = f"context {chosen.name}"
        if chosen.url is not None:
            raw_url, url_source = chosen.url, where
            raw_ca, ca_source = chosen.ca_file or raw_ca, where
            raw_token_file, token_file_source = chosen.token_file or raw_token_file, where
        else:
            raw_url = None  # a context naming a file is a local database
    if location is None:
        # With a team server in force no file here is ever opened, and asking the platform
        # for its data folder (platformdirs) would cost every remote command ~6 ms.
        location = default_db_path() if raw_url is None else Path(os.devnull)
    nats = location if isinstance(location, NatsLocation) else None
    # A JetStream database has no file: the path is never opened (nothing local is used).
    db_path = Path(os.devnull) if isinstance(location, NatsLocation) else location
    raw_token, token_source = variable(TOKEN), TOKEN.name
    if raw_token_file is not None:
        raw_token = read_token_file(raw_token_file, token_file_source)
        token_source = token_file_source
    raw_creds = variable(NATS_CREDS)
    raw_host = host if host is not None else variable(HOST)
    return Settings(
        db_path=db_path,
        db_source=db_source,
        owner=raw_owner,
        host=DEFAULT_HOST
        if raw_host is None
        else parse_host(raw_host, "--host" if host is not None else HOST.name),
        port=None
        if raw_port is None
        else parse_port(raw_port, "--port" if port is not None else PORT.name),
        no_broadcast=no_broadcast if no_broadcast is not None else flag(NO_BROADCAST),
        idle_timeout=DEFAULT_IDLE_TIMEOUT
        if raw_idle is None
        else parse_seconds(raw_idle, IDLE_TIMEOUT.name),
        journal_limit=DEFAULT_JOURNAL_LIMIT
        if raw_limit is None
        else parse_count(raw_limit, JOURNAL_LIMIT.name, minimum=1),
        lock_timeout=DEFAULT_LOCK_TIMEOUT,
        debug=flag(DEBUG),
        require_token=require_token if require_token is not None else flag(REQUIRE_TOKEN),
        max_connections=DEFAULT_MAX_CONNECTIONS
        if raw_connections is None
        else parse_count(raw_connections, MAX_CONNECTIONS.name, minimum=1),
        url=None if raw_url is None else parse_url(raw_url, url_source),
        url_source=url_source if raw_url is not None else "",
        token=None if raw_token is None else parse_token(raw_token, TOKEN.name),
        ca_file=None if raw_ca is None else str(parse_file(raw_ca, ca_source)),
        unique_names=flag(UNIQUE_NAMES),
        context=None if chosen is None else chosen.name,
        context_source=context_source,
        token_source=token_source if raw_token is not None else "",
        nats=nats,
        nats_creds=None if raw_creds is None else str(parse_file(raw_creds, NATS_CREDS.name)),
    )


# -- contexts (stored in their own private file: projctl._contexts) ---------------------


def _chosen_context(
    env: Mapping[str, str], given: str | None, *, db: str | None, url: str | None
) -> tuple[Context | None, str]:
    """The context in force and what chose it: ``--context``, ``PROJCTL_CONTEXT``, or (when
    nothing else says where the database is) the current one."""
    if given is not None:
        name, source = parse_context_name(given, "--context"), "--context"
    elif env.get(CONTEXT.name):
        name, source = parse_context_name(env[CONTEXT.name], CONTEXT.name), CONTEXT.name
    elif db is None and url is None and DB.name not in env and not env.get(URL.name):
        current = _read_contexts().current
        if current is None:
            return None, ""
        name, source = current, "current"
    else:
        return None, ""
    found = _read_contexts().contexts.get(name)
    if found is None:
        raise ConfigError(f"{source}: no context named {name!r} (projctl context list shows them)")
    return found, source


def _read_contexts() -> Contexts:
    """The stored contexts; imported only when a command looks for one (not where
    ``--db`` or ``PROJCTL_DB`` says where the database is, nor for ``--help``)."""
    from projctl._contexts import read_contexts

    return read_contexts()


def parse_context_name(raw: str, source: str) -> str:
    """A context's name: 1-64 of letters, digits, ``.``, ``_``, ``-``, not starting with one
    of the last three."""
    from projctl._contexts import CONTEXT_NAME

    if not CONTEXT_NAME.fullmatch(raw):
        raise _refuse(source, raw, "a context name: 1-64 of A-Z, a-z, 0-9, '.', '_', '-'")
    return raw


def read_token_file(raw: str, source: str) -> str:
    """The token held in the file ``raw`` names (its first non-blank line), for a team
    server: a file only its owner may read, so the token is in no command line."""
    from projctl._contexts import read_private_text

    path = Path(os.path.expanduser(raw))
    text = read_private_text(path, f"token file ({source})", limit=_TOKEN_MAX + 2) or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{source}: the token file {path} is empty")
    return parse_token(lines[0], f"{source} ({path})")

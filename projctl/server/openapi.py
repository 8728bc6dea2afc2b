"""The OpenAPI 3.1 document of the server's HTTP API, served at ``GET /api/openapi.json``.

Built from the constants the server itself checks against (the fields, statuses, limits,
patterns and error codes), so the document cannot drift from the code; ``docs/openapi.json``
is this document written out (a test keeps it equal). ``python -m projctl.server.openapi``
prints it.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from projctl._version import __version__
from projctl.backend import IDEMPOTENCY_KEY_MAX
from projctl.events import EMIT_DATA_MAX_BYTES, EMIT_TYPE_PATTERN
from projctl.model import DESCRIPTION_MAX, EDITABLE_FIELDS, NAME_MAX, OWNER_MAX, STATUSES

__all__ = ["ERROR_CODES", "document", "document_bytes", "document_tag"]

#: Every ``error`` code an API answer may carry, with what it means: stable, for scripts.
ERROR_CODES: dict[str, str] = {
    "invalid_input": "a body, field, header or query value breaks a rule (400), named",
    "unauthorized": "no token, or an unknown one, where one is needed (401, with WWW-Authenticate)",
    "forbidden": "a read token asked for a write, or a page's Origin is not allowed (403)",
    "not_found": "no such route, or no project with that id or name (404; `project` names it)",
    "method_not_allowed": "the route does not take this method (405, with Allow)",
    "ambiguous": "several projects have that exact name: give an id (409)",
    "name_taken": "`?unique=true`, and another project has that name: nothing was written (409)",
    "idempotency_key_in_use": "this Idempotency-Key's request is still running (409, Retry-After)",
    "precondition_failed": "If-Match names a version the project no longer has (412)",
    "unsupported_media_type": "a write's body is not application/json (415)",
    "misdirected": "the Host header does not name this server (421)",
    "idempotency_key_reused": "this Idempotency-Key was used for another request (422)",
    "store_error": "the database cannot be read or written: 500 (corrupt: a retry finds the "
    "same) or 503 with Retry-After (locked too long: a retry may succeed)",
    "server_error": "a failure of the server itself, not of the request (500)",
    "unavailable": "too many connections, or the server is stopping (503, Retry-After)",
}

_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}$"
_PROJECT_ID = r"^proj_[0-9]{8}_[0-9]{6}(_[1-9][0-9]{0,8})?$"
_TYPE = r"^[a-z0-9][a-z0-9_-]{0,31}$"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _text() -> dict[str, Any]:
    return {"text/plain": {"schema": {"type": "string"}}}


def _fields(*, creating: bool) -> dict[str, Any]:
    """The body of a create (``creating``) or of an update."""
    described = {
        "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
        "type": {"type": "string", "pattern": _TYPE},
        "project_type": {
            "type": "string",
            "pattern": _TYPE,
            "description": "the original backend's name for `type`, taken as it is",
        },
        "status": {"enum": list(STATUSES)},
        "owner_id": {"type": "string", "minLength": 1, "maxLength": OWNER_MAX},
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": described,
        "additionalProperties": False,
        "description": "Unknown fields are refused by name (400). Names and owners are "
        "trimmed and may hold no control characters.",
    }
    if creating:
        schema["required"] = ["name"]
    else:
        schema["minProperties"] = 1
    return schema


def _schemas() -> dict[str, Any]:
    project = {
        "type": "object",
        "required": [
            "project_id",
            "name",
            "type",
            "status",
            "owner_id",
            "description",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "project_id": {"type": "string", "pattern": _PROJECT_ID},
            "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
            "type": {"type": "string", "pattern": _TYPE},
            "status": {"enum": list(STATUSES)},
            "owner_id": {"type": "string", "minLength": 1, "maxLength": OWNER_MAX},
            "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
            "created_at": {"type": "string", "pattern": _TIMESTAMP},
            "updated_at": {"type": "string", "pattern": _TIMESTAMP},
        },
    }
    event = {
        "type": "object",
        "description": "An event exactly as /ws broadcasts it (see docs/events.md and "
        "docs/schemas/): project_created, project_updated, project_deleted or an emitted one.",
        "required": ["event_type", "timestamp", "seq", "data"],
        "properties": {
            "event_type": {"type": "string", "pattern": f"^{EMIT_TYPE_PATTERN.pattern}$"},
            "timestamp": {"type": "string", "pattern": _TIMESTAMP},
            "seq": {"type": "integer", "minimum": 1},
            "data": {
                "type": "object",
                "required": ["project_id", "name"],
                "properties": {"project_id": {"type": "string"}, "name": {"type": "string"}},
            },
        },
    }
    deletion = {
        "type": "object",
        "required": ["project_id", "name", "deleted", "project", "seq", "timestamp"],
        "properties": {
            "project_id": {"type": "string", "pattern": _PROJECT_ID},
            "name": {"type": "string"},
            "deleted": {"const": True},
            "project": _ref("schemas", "Project"),
            "seq": {"type": "integer", "minimum": 1},
            "timestamp": {"type": "string", "pattern": _TIMESTAMP},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"enum": list(ERROR_CODES), "description": "stable, for scripts"},
                "message": {"type": "string", "description": "one line, for people"},
                "project": {"type": "string", "description": "the project looked for (404)"},
            },
        },
        "Project": project,
        "ProjectCreate": _fields(creating=True),
        "ProjectChanges": _fields(creating=False),
        "Updated": {
            "type": "object",
            "required": ["project", "updated_fields"],
            "properties": {
                "project": _ref("schemas", "Project"),
                "updated_fields": {
                    "type": "array",
                    "items": {"enum": list(EDITABLE_FIELDS)},
                    "description": "the fields whose value really changed, in the order "
                    "name, type, status, owner_id, description; [] when none did (no event)",
                },
            },
        },
        "Deletion": deletion,
        "Deletions": {
            "type": "object",
            "required": ["deleted"],
            "properties": {"deleted": {"type": "array", "items": _ref("schemas", "Deletion")}},
        },
        "Event": event,
        "Emit": {
            "type": "object",
            "required": ["event_type"],
            "additionalProperties": False,
            "properties": {
                "event_type": {
                    "type": "string",
                    "pattern": f"^{EMIT_TYPE_PATTERN.pattern}$",
                    "description": "not project_created, project_updated, project_deleted, "
                    "snapshot or resync",
                },
                "data": {
                    "type": "object",
                    "description": f"at most {EMIT_DATA_MAX_BYTES} bytes as compact JSON, "
                    "without project_id or name",
                },
            },
        },
        "Emitted": {
            "type": "object",
            "required": ["event", "project"],
            "properties": {
                "event": _ref("schemas", "Event"),
                "project": _ref("schemas", "Project"),
            },
        },
        "ProjectList": {
            "type": "object",
            "required": ["seq", "projects"],
            "properties": {
                "seq": {"type": "integer", "minimum": 0},
                "projects": {"type": "array", "items": _ref("schemas", "Project")},
            },
        },
        "EventsPage": {
            "type": "object",
            "required": ["events", "latest_seq", "resync"],
            "properties": {
                "events": {"type": "array", "items": _ref("schemas", "Event")},
                "latest_seq": {"type": "integer", "minimum": 0},
                "resync": {
                    "type": "boolean",
                    "description": "true: the events after `since` are gone (or `since` is "
                    "beyond latest_seq); rebuild from `projects`",
                },
                "oldest_seq": {"type": "integer", "minimum": 0},
                "projects": {"type": "array", "items": _ref("schemas", "Project")},
            },
        },
        "Info": {
            "type": "object",
            "required": ["database", "projects", "latest_seq", "journal"],
            "properties": {
                "database": {
                    "type": "object",
                    "required": ["id", "name"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {
                            "type": "string",
                            "description": "what the dashboard calls it: the file's name, "
                            "no folder",
                        },
                    },
                },
                "projects": {"type": "integer", "minimum": 0},
                "latest_seq": {"type": "integer", "minimum": 0},
                "journal": {
                    "type": "object",
                    "required": ["events", "limit"],
                    "properties": {
                        "events": {"type": "integer", "minimum": 0},
                        "limit": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
        "Access": {
            "type": "object",
            "required": ["may_read", "may_write"],
            "description": "What the token this request carries (or none) lets it do.",
            "properties": {
                "may_read": {"type": "boolean"},
                "may_write": {"type": "boolean"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "latest_seq"],
            "description": "Everyone gets status, version and latest_seq; a token holder "
            "(or, on a server that asks for no token, a loopback client) also pid, url, "
            "http_url, database, subscribers and counters.",
            "properties": {
                "status": {"const": "ok"},
                "version": {"type": "string"},
                "latest_seq": {"type": "integer", "minimum": 0},
                "pid": {"type": "integer"},
                "url": {"type": "string"},
                "http_url": {"type": "string"},
                "subscribers": {"type": "integer", "minimum": 0},
            },
        },
    }


def _headers() -> dict[str, Any]:
    def header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"description": description, "schema": schema or {"type": "string"}}

    return {
        "ETag": header("the project's version, for If-Match (a strong entity tag)"),
        "Location": header("where the new project is: /api/projects/{project_id}"),
        "Projctl-Seq": header(
            "the seq of each event the write committed, comma-separated: "
            "/ws?since=<first - 1> shows it happen",
            {"type": "string", "pattern": "^[0-9]+(, [0-9]+)*$"},
        ),
        "Idempotent-Replayed": header(
            "`true` on the answer to a repeated Idempotency-Key: nothing was written again",
            {"const": "true"},
        ),
        "Projctl-Same-Name": header(
            "the ids of the other projects that already had the new name (a create or a "
            "rename), comma-separated: a warning; absent when none had it",
            {"type": "string", "pattern": "^[^,]+(, [^,]+)*$"},
        ),
        "Retry-After": header("seconds to wait before retrying", {"type": "integer"}),
        "WWW-Authenticate": header('`Bearer realm="projctl"`'),
        "Allow": header("every method the route takes"),
    }


def _responses() -> dict[str, Any]:
    def error(description: str, *headers: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "description": description,
            "content": _json(_ref("schemas", "Error")),
        }
        if headers:
            answer["headers"] = {name: _ref("headers", name) for name in headers}
        return answer

    return {
        "BadRequest": error("invalid_input: the message names what is wrong"),
        "Unauthorized": error("unauthorized: a token is needed", "WWW-Authenticate"),
        "Forbidden": error("forbidden: a read token asked for a write, or the Origin is refused"),
        "NotFound": error("not_found: `project` is what was looked for"),
        "Conflict": error(
            "ambiguous (several projects have that name) or idempotency_key_in_use",
            "Retry-After",
        ),
        "PreconditionFailed": error("precondition_failed: If-Match does not match any more"),
        "PayloadTooLarge": {
            "description": "the body is over 256 KiB; refused before it is read, in plain "
            "text, and the connection is closed",
            "content": _text(),
        },
        "UnsupportedMediaType": error("unsupported_media_type: send application/json"),
        "Misdirected": error("misdirected: the Host header does not name this server"),
        "KeyReused": error("idempotency_key_reused: the key was used for another request"),
        "ServerError": error("store_error (a database that cannot be read) or server_error"),
        "Unavailable": error(
            "unavailable (too many connections, stopping) or store_error (the lock "
            "was held too long)",
            "Retry-After",
        ),
    }


def _parameters() -> dict[str, Any]:
    def filter_(name: str, field: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "description": f"only projects whose {field} is one of these (repeat for OR)",
            "style": "form",
            "explode": True,
            "schema": {"type": "array", "items": schema},
        }

    return {
        "Project": {
            "name": "project",
            "in": "path",
            "required": True,
            "description": "a project id, or else a project's exact name (percent-encoded)",
            "schema": {"type": "string", "minLength": 1},
        },
        "Since": {
            "name": "since",
            "in": "query",
            "description": "the events with a seq above this; 0: every retained one",
            "schema": {"type": "integer", "minimum": 0, "maximum": 10**19 - 1},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "makes a retry safe: the same key and request again gets the "
            "first answer (Idempotent-Replayed: true) and writes nothing; kept in the "
            "database, so across restarts too. Quotes (a structured-field string) are "
            "optional.",
            "schema": {"type": "string", "pattern": f"^[ -~]{{1,{IDEMPOTENCY_KEY_MAX}}}$"},
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "description": "the ETag the change is meant for (or `*`): 412 when the project "
            "has changed since. One tag; a weak tag never matches.",
            "schema": {"type": "string"},
        },
        "Unique": {
            "name": "unique",
            "in": "query",
            "description": "refuse (409 name_taken) a name another project has, checked in "
            "the write's own transaction; without it, Projctl-Same-Name lists them",
            "schema": {"type": "boolean"},
        },
        "Status": filter_("status", "status", {"enum": list(STATUSES)}),
        "Owner": filter_("owner", "owner_id", {"type": "string"}),
        "Type": filter_("type", "type", {"type": "string"}),
    }


def _ok(description: str, schema: str, *headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": _json(_ref("schemas", schema)),
    }
    if headers:
        answer["headers"] = {name: _ref("headers", name) for name in headers}
    return answer


def _errors(*statuses: str) -> dict[str, Any]:
    names = {
        "400": "BadRequest",
        "401": "Unauthorized",
        "403": "Forbidden",
        "404": "NotFound",
        "409": "Conflict",
        "412": "PreconditionFailed",
        "413": "PayloadTooLarge",
        "415": "UnsupportedMediaType",
        "421": "Misdirected",
        "422": "KeyReused",
        "500": "ServerError",
        "503": "Unavailable",
    }
    return {status: _ref("responses", names[status]) for status in statuses}


#: What every read of the API may be answered besides its own answer.
_READ_ERRORS = ("400", "401", "403", "421", "500", "503")
#: And every write.
_WRITE_ERRORS = ("400", "401", "403", "404", "409", "412", "413", "415", "421", "422", "500", "503")
_READ: list[dict[str, list[str]]] = [{}, {"bearer": []}]
_WRITE: list[dict[str, list[str]]] = [{"bearer": []}]


def _write(summary: str, answers: dict[str, Any], **more: Any) -> dict[str, Any]:
    parameters = [_ref("parameters", "IdempotencyKey"), *more.pop("parameters", [])]
    return {
        "summary": summary,
        "security": _WRITE,
        "parameters": parameters,
        **more,
        "responses": {**answers, **_errors(*_WRITE_ERRORS)},
    }


def _paths() -> dict[str, Any]:
    project = _ref("parameters", "Project")
    if_match = _ref("parameters", "IfMatch")
    unique = _ref("parameters", "Unique")
    replayed = ("ETag", "Projctl-Seq", "Idempotent-Replayed", "Projctl-Same-Name")
    update = _write(
        "Change some fields of a project (a partial body)",
        {"200": _ok("the project after the change", "Updated", *replayed)},
        parameters=[if_match, unique],
        requestBody={"required": True, "content": _json(_ref("schemas", "ProjectChanges"))},
    )
    return {
        "/": {
            "get": {
                "summary": "The live dashboard (its style sheet and ES modules beside it)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the page",
                        "headers": {"ETag": _ref("headers", "ETag")},
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                    "403": {"description": "the Origin is refused", "content": _text()},
                    "421": {
                        "description": "the Host does not name this server",
                        "content": _text(),
                    },
                    "503": {"description": "too many connections", "content": _text()},
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Whether the server is up; its detail for token holders",
                "security": _READ,
                "responses": {
                    "200": _ok("up", "Health"),
                    **_errors("400", "403", "421"),
                },
            }
        },
        "/ws": {
            "get": {
                "summary": "The live feed: a WebSocket upgrade (see docs/protocol.md)",
                "description": "Each event is one text frame holding one JSON object. "
                "`?since=N` replays the retained events after N first; when they are gone, "
                "or N is beyond the latest seq, a `resync` message with every project comes "
                "first. `?snapshot=1` sends a `snapshot` message first. A plain GET (no "
                "upgrade) is answered 426.",
                "security": _READ,
                "parameters": [
                    _ref("parameters", "Since"),
                    {"name": "snapshot", "in": "query", "schema": {"enum": ["1"]}},
                ],
                "responses": {
                    "101": {"description": "switching to the WebSocket protocol"},
                    "400": {
                        "description": "a bad since, or a token in the URL",
                        "content": _text(),
                    },
                    "401": {
                        "description": "a token is needed",
                        "headers": {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
                        "content": _text(),
                    },
                    "403": {"description": "the Origin is refused", "content": _text()},
                    "421": {
                        "description": "the Host does not name this server",
                        "content": _text(),
                    },
                    "426": {"description": "not a WebSocket handshake", "content": _text()},
                    "503": {"description": "too many connections", "content": _text()},
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document (public: it needs no token)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "headers": {"ETag": _ref("headers", "ETag")},
                        "content": _json({"type": "object"}),
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                    **_errors("400", "403", "421", "503"),
                },
            }
        },
        "/api/info": {
            "get": {
                "summary": "The database: its id, projects, latest seq and journal",
                "security": _READ,
                "responses": {"200": _ok("the database", "Info"), **_errors(*_READ_ERRORS)},
            }
        },
        "/api/whoami": {
            "get": {
                "summary": "What the token presented may do: read, write (public)",
                "security": _READ,
                "responses": {
                    "200": _ok("what it may do", "Access"),
                    **_errors("400", "403", "421", "503"),
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "The retained events after `since`, or what to rebuild from",
                "security": _READ,
                "parameters": [_ref("parameters", "Since")],
                "responses": {
                    "200": _ok("the events, or a resync", "EventsPage"),
                    **_errors(*_READ_ERRORS),
                },
            }
        },
        "/api/projects": {
            "get": {
                "summary": "The projects, oldest first; filters of one kind OR, kinds AND",
                "security": _READ,
                "parameters": [
                    _ref("parameters", "Status"),
                    _ref("parameters", "Owner"),
                    _ref("parameters", "Type"),
                ],
                "responses": {"200": _ok("the projects", "ProjectList"), **_errors(*_READ_ERRORS)},
            },
            "post": _write(
                "Create a project",
                {"201": _ok("the new project", "Project", "Location", *replayed)},
                parameters=[unique],
                requestBody={"required": True, "content": _json(_ref("schemas", "ProjectCreate"))},
            ),
            "delete": _write(
                "Delete several projects: all of them, or none when one is missing",
                {"200": _ok("each project as it was", "Deletions", "Projctl-Seq")},
                parameters=[
                    {
                        "name": "project_id",
                        "in": "query",
                        "required": True,
                        "description": "an id or exact name; repeat for several",
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    },
                    {
                        "name": "missing_ok",
                        "in": "query",
                        "description": "skip the ones that do not exist (1, true or yes)",
                        "schema": {"type": "boolean"},
                    },
                    if_match,
                ],
            ),
        },
        "/api/projects/{project}": {
            "parameters": [project],
            "get": {
                "summary": "One project, with its ETag",
                "security": _READ,
                "responses": {
                    "200": _ok("the project", "Project", "ETag"),
                    **_errors(*_READ_ERRORS, "404", "409"),
                },
            },
            "put": update,
            "patch": {**update, "summary": "The same as PUT"},
            "delete": _write(
                "Delete a project",
                {"200": _ok("the project as it was", "Deletion", "Projctl-Seq")},
                parameters=[if_match],
            ),
        },
        "/api/projects/{project}/events": {
            "parameters": [project],
            "post": _write(
                "Record an event about a project (it changes nothing)",
                {"201": _ok("the event as broadcast", "Emitted", "Projctl-Seq")},
                requestBody={"required": True, "content": _json(_ref("schemas", "Emit"))},
            ),
        },
    }


_DESCRIPTION = """\
The HTTP API of a projctl server: the projects of one database, its event journal, and the
writes that change them. Every write commits a lifecycle event, broadcast on the live feed
(`/ws`) in the shape of the event contract (docs/events.md).

Every route answers only the methods listed here: any other gets 405 with `Allow`. `HEAD`
is answered like `GET`, without the body, and `OPTIONS` is a CORS preflight. Pages on
localhost, 127.0.0.1 and [::1], the server's own pages, and the origins the server was told
to allow (`serve --allow-origin`; `null` for a page opened from a file) get CORS headers;
other origins get 403. Every answer checks `Host` (421) and carries `Date`.

Reading needs a read or write token when the server asks for one (beyond loopback, or
`--require-token`); writing always needs a write token. This document and `/healthz`'s
short answer are public. docs/protocol.md describes it all in prose.
"""


def document() -> dict[str, Any]:
    """The OpenAPI document, a new dict each call."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "projctl",
            "version": __version__,
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "security": _READ,
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "parameters": _parameters(),
            "headers": _headers(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A read or write token: `Authorization: Bearer TOKEN`. "
                    "A local server's write token: `projctl server token`.",
                }
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document as served: indented JSON, with a final newline."""
    import json

    return (json.dumps(document(), indent=2, ensure_ascii=False) + "\n").encode()


@functools.cache
def document_tag() -> str:
    """The document's entity tag (it changes only with the package)."""
    return '"' + hashlib.sha256(document_bytes()).hexdigest()[:32] + '"'


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(document_bytes())

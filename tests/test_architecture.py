"""Keep STYLE.md's module boundaries: what may import what, where third parties live, no cycles.

The import graph is built from every ``import`` and ``from ... import`` anywhere in each module
(at the top, inside functions, under ``TYPE_CHECKING``), a bare ``import projctl`` included: a lazy
import still runs, and a cycle through one still bites whoever imports in the wrong order.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "projctl"

# Our modules each module may import, as STYLE.md lays them out. ``errors`` is the
# stdlib-only leaf every module may raise from. ``__init__`` (the package itself: ``import
# projctl``, ``from projctl import Database``) is the public API: it composes the core and may
# import any of it, but never the CLI, which sits on top of it; only the CLI imports it.
ALLOWED_OURS: dict[str, set[str]] = {
    "errors": set(),
    "_version": set(),
    "config": {"errors", "_contexts"},
    # The contexts file and private files: config's own, stdlib only.
    "_contexts": {"errors"},
    "model": {"errors"},
    "events": {"errors"},
    "_files": set(),
    # The database file (its lock, bytes, version, format) and the lock file's record:
    # store's own, TinyDB-free.
    "_storefile": {"errors", "_files", "backend"},
    # What every client of a server shares (TLS context, backoff, refusal lines): stdlib only.
    "_client": {"errors"},
    "backend": {"model", "events", "errors", "runtime"},
    # config: the journal limit's default is typed once, there.
    "store": {
        "backend",
        "config",
        "model",
        "events",
        "errors",
        "_files",
        "_storefile",
        "_storetables",
    },
    # The store's tables in memory for one transaction: its own, with TinyDB.
    "_storetables": {"model", "events", "errors", "_storefile"},
    "jetstream": {"backend", "model", "events", "errors", "_files"},
    "local": {"backend", "config", "errors", "events", "model", "store", "runtime", "rpc"},
    "rpc": {"config", "errors", "_files"},
    "runtime": {"config", "errors", "_files", "rpc"},
    "sequencer": {"events"},
    "server": {"backend", "sequencer", "rpc", "runtime", "events", "model", "errors", "config"},
    # The background server's process: it opens the TinyDB file its launch names.
    "server.__main__": {"server", "store", "config", "runtime", "errors"},
    "remote": {"backend", "config", "errors", "events", "model", "runtime", "_client"},
    "subscribe": {"events", "runtime", "errors", "_client"},
    "watch": {"events", "subscribe", "model"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": {
        "backend",
        "jetstream",
        "local",
        "remote",
        "config",
        "errors",
        "model",
        "events",
        "store",
        "rpc",
        "runtime",
        "server",
        "subscribe",
    },
}
# Leaves every module may import: the version string alone, so that reading it never imports
# the package (and through it the whole public API).
OPEN_TO_ALL = {"_version"}
# Third-party packages and the only modules allowed to import them.
THIRD_PARTY_HOMES: dict[str, set[str]] = {
    "tinydb": {"store", "_storetables"},
    # The jetstream package: every one of its modules is the house "jetstream".
    "nats": {"jetstream"},
    "websockets": {"server", "subscribe"},
    "h11": {"server"},
    "rich": {"watch", "cli"},
    "typer": {"cli"},
}
# Known edges that break the rules above and close an import cycle, each waiting for its fix
# on another branch of the same change. Each one is removed when its fix is merged:
# test_every_allowance_is_still_needed fails as soon as an allowance no longer matches.
ALLOWANCES: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    """The dotted name: ``projctl/cli/_lazy.py`` is ``projctl.cli._lazy``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ours(name: str, modules: Mapping[str, object]) -> str | None:
    """The module of ours that ``name`` (a dotted import) loads: its longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imports(source: str, module: str, modules: Mapping[str, object]) -> set[str]:
    """Every name ``module`` imports, anywhere in ``source``, as absolute dotted names.

    ``from projctl import events`` is the module ``projctl.events``; ``from projctl import
    Database`` (or ``__version__``) is the package ``projctl`` itself, as is ``import projctl``.
    """
    is_package = str(modules.get(module, "")).endswith("__init__.py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def _graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Our module -> the modules of ours it imports (itself left out)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        imported = _imports(path.read_text(), module, modules)
        targets = {_ours(name, modules) for name in imported}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None when there is none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def _path(graph: Mapping[str, set[str]], start: str, end: str) -> list[str] | None:
    """The shortest import path from ``start`` to ``end``, or None when there is none."""
    paths = {start: [start]}
    queue = [start]
    for node in queue:  # grows while it is walked: breadth first, each node once
        if node == end:
            return paths[node]
        for nxt in sorted(graph.get(node, ())):
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return None


def _house(module: str) -> str:
    """``cli`` for every module of the ``cli`` package (and so for every package), ``__init__``
    for the package ``projctl`` itself, else the module's own name. A subpackage's
    ``__main__`` is its process's composition root, a house of its own (``server.__main__``)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[-1] == "__main__":
        return f"{parts[1]}.__main__"
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = _graph(MODULES)


def _without_allowances(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in ALLOWANCES} for m, ts in graph.items()}


def _third_party(module: str) -> Iterator[str]:
    for name in _imports(MODULES[module].read_text(), module, MODULES):
        top = name.partition(".")[0]
        if top in THIRD_PARTY_HOMES:
            yield top


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_follow_the_house_rules(module: str) -> None:
    name = _house(module)
    assert name in ALLOWED_OURS, f"{module} is not in STYLE.md's house"
    for target in sorted(_without_allowances(GRAPH)[module]):
        ours = _house(target)
        if ours == name or ours in OPEN_TO_ALL:
            continue
        assert "*" in ALLOWED_OURS[name] or ours in ALLOWED_OURS[name], (
            f"{module} must not import {target}"
        )
    for top in _third_party(module):
        assert name in THIRD_PARTY_HOMES[top], f"{module} must not import {top}"


def test_there_is_no_import_cycle() -> None:
    """Lazy imports included: ``projctl`` imports ``server`` inside a method, so ``server``
    (or anything it imports) must not import the package back, not even for its version."""
    cycle = _find_cycle(_without_allowances(GRAPH))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_allowance_is_still_needed() -> None:
    """An allowance is a known edge closing a cycle; once its fix lands, delete it."""
    for (module, target), why in ALLOWANCES.items():
        assert target in GRAPH.get(module, set()), (
            f"{module} no longer imports {target} ({why}): remove its allowance"
        )
        back = _path(_without_allowances(GRAPH), target, module)
        assert back is not None, (
            f"{module} -> {target} ({why}) closes no cycle now: remove its allowance"
        )


def test_the_graph_sees_bare_and_lazy_imports_of_the_package() -> None:
    modules = {"projctl": "projctl/__init__.py", "projctl.a": "a.py", "projctl.b": "b.py"}
    source = (
        "def f():\n"
        "    import projctl\n"
        "def g():\n"
        "    from projctl import __version__, b\n"
        "    from . import a\n"
        "    from .b import thing\n"
    )
    assert _imports(source, "projctl.a", modules) == {"projctl", "projctl.b", "projctl.a"}


def test_the_cycle_finder_names_the_cycle() -> None:
    graph = {"projctl": {"projctl.server"}, "projctl.server": {"projctl.remote"}}
    assert _find_cycle(graph) is None
    graph["projctl.remote"] = {"projctl", "projctl.errors"}
    assert _find_cycle(graph) == ["projctl", "projctl.server", "projctl.remote", "projctl"]
    assert _path(graph, "projctl", "projctl.remote") == [
        "projctl",
        "projctl.server",
        "projctl.remote",
    ]
    assert _path(graph, "projctl.server", "projctl.cli") is None


def test_the_version_is_a_leaf_that_imports_nothing() -> None:
    """Anything may read ``__version__`` without importing the package; the build reads it too."""
    assert _imports(MODULES["projctl._version"].read_text(), "projctl._version", MODULES) == {
        "__future__"
    }
    hatch = re.search(
        r'^\[tool\.hatch\.version\]\npath = "([^"]+)"$',
        (ROOT / "pyproject.toml").read_text(),
        re.MULTILINE,
    )
    assert hatch is not None
    assert hatch.group(1) == "projctl/_version.py"


def test_nothing_imports_cli() -> None:
    for module, targets in GRAPH.items():
        if _house(module) not in ("cli", "__main__"):
            assert not any(_house(t) == "cli" for t in targets), module


def test_only_lazy_touches_typer_and_click_internals() -> None:
    """typer's vendored click and its builders are private API: one module holds every use."""
    for module, path in MODULES.items():
        for imported in _imports(path.read_text(), module, MODULES):
            private = imported.startswith(("typer._", "typer.main", "typer.core", "click"))
            if private:
                assert path.name == "_lazy.py", f"{module} imports {imported}"


def test_create_does_not_import_rich() -> None:
    """The hot path stays light: rich is only for tables on a terminal."""
    probe = (
        "import sys; from projctl.cli import app; "
        "from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['create', 'x']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pydantic')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"

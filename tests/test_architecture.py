"""Keep the module boundaries of STYLE.md: what may import what, and where third parties live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "projctl"

# Our modules each module may import, as STYLE.md lays them out. ``errors`` is the
# stdlib-only leaf every module may raise from; ``projctl.__version__`` (the package's own
# metadata) is open to all. ``__init__`` is the public API: it composes the core and may
# import any of it, but never the CLI, which sits on top of it.
ALLOWED_OURS: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "model": {"errors"},
    "events": {"errors"},
    "_files": set(),
    "store": {"model", "events", "errors", "_files"},
    "rpc": {"config", "errors", "_files"},
    "runtime": {"config", "errors", "_files", "rpc"},
    "sequencer": {"events"},
    "server": {"sequencer", "store", "rpc", "runtime", "events", "model", "errors", "remote"},
    "remote": {"config", "errors", "events", "model", "runtime", "store"},
    "subscribe": {"events", "runtime", "errors"},
    "watch": {"events", "subscribe", "model"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": {
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
# Third-party packages and the only modules allowed to import them.
THIRD_PARTY_HOMES: dict[str, set[str]] = {
    "tinydb": {"store"},
    "websockets": {"server", "subscribe", "remote"},
    "rich": {"watch", "cli"},
    "typer": {"cli"},
}


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "projctl":
                names.update(f"projctl.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


def _house_name(module: Path) -> str:
    """``cli`` for every module of the ``cli`` package, else the module's own name."""
    relative = module.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else module.stem


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_follow_the_house_rules(module: Path) -> None:
    name = _house_name(module)
    assert name in ALLOWED_OURS, f"projctl/{module.name} is not in STYLE.md's house"
    for imported in _imports(module):
        top, _, rest = imported.partition(".")
        if top == "projctl" and rest:
            ours = rest.split(".")[0]
            if ours == "__version__":
                continue
            assert "*" in ALLOWED_OURS[name] or ours in ALLOWED_OURS[name], (
                f"{name} must not import projctl.{ours}"
            )
        if top in THIRD_PARTY_HOMES:
            assert name in THIRD_PARTY_HOMES[top], f"{name} must not import {top}"


def test_nothing_imports_cli() -> None:
    for module in MODULES:
        if _house_name(module) not in ("cli", "__main__"):
            assert not any(name.startswith("projctl.cli") for name in _imports(module)), module


def test_only_lazy_touches_typer_and_click_internals() -> None:
    """typer's vendored click and its builders are private API: one module holds every use."""
    for module in MODULES:
        for imported in _imports(module):
            private = imported.startswith(("typer._", "typer.main", "typer.core", "click"))
            if private:
                assert module.name == "_lazy.py", f"{module} imports {imported}"


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

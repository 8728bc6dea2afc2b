"""Keep the module boundaries of STYLE.md: what may import what, and where third parties live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "projctl"

# Our modules each module may import. ``model`` raises the domain errors of ``errors`` (a
# stdlib-only leaf); otherwise errors, model and events import nothing of ours.
# ``projctl.__version__`` (the package's own metadata) is open to all.
ALLOWED_OURS: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "events": set(),
    "store": {"model", "events", "errors"},
    "server": {"events", "store", "errors"},
    "client": {"events", "errors"},
    "watch": {"events", "client", "model"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Third-party packages and the only modules allowed to import them.
THIRD_PARTY_HOMES: dict[str, set[str]] = {
    "tinydb": {"store"},
    "websockets": {"server", "client"},
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


MODULES = sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.stem)
def test_module_imports_follow_the_house_rules(module: Path) -> None:
    name = module.stem
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
        if module.stem not in ("cli", "__main__"):
            assert "projctl.cli" not in _imports(module), module.stem


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

"""The dependency floors are the versions CI checks: .ci/lowest.txt pins each at its floor."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _requirements(opening: str) -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split(opening, 1)[1].split("\n]", 1)[0]
    return [Requirement(line) for line in re.findall(r'^\s*"([^"]+)",', block, re.MULTILINE)]


def _dependencies() -> list[Requirement]:
    return _requirements("\ndependencies = [\n")


def _test_extra() -> list[Requirement]:
    return _requirements("\ntest = [\n")


def _floor(requirement: Requirement) -> Version:
    (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
    return Version(floor)


def _lowest() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = Version(version.strip())
    return pins


def test_lowest_pins_each_core_dependency_at_its_floor() -> None:
    dependencies = _dependencies()
    floors = {requirement.name.lower(): _floor(requirement) for requirement in dependencies}
    core_pins = {name: pin for name, pin in _lowest().items() if name in floors}
    assert core_pins == floors
    # and each pin is allowed by pyproject.toml itself (under any upper bound)
    for requirement in dependencies:
        assert requirement.specifier.contains(_lowest()[requirement.name.lower()])


def test_every_other_pin_is_a_test_extra_at_its_floor() -> None:
    """Beside the core, .ci/lowest.txt pins a test package only at the floor the test extra
    states (jsonschema: the schema tests rely on its floor's API)."""
    core = {requirement.name.lower() for requirement in _dependencies()}
    extra = {requirement.name.lower(): requirement for requirement in _test_extra()}
    others = {name: pin for name, pin in _lowest().items() if name not in core}
    assert "jsonschema" in others
    for name, pin in others.items():
        assert name in extra, f"{name} is pinned in .ci/lowest.txt but is no test dependency"
        assert _floor(extra[name]) == pin, name

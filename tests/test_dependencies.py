"""The dependency floors are the versions CI checks: .ci/lowest.txt pins each at its floor."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _dependencies() -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("\ndependencies = [\n", 1)[1].split("\n]", 1)[0]
    return [Requirement(line) for line in re.findall(r'^\s*"([^"]+)",', block, re.MULTILINE)]


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
    floors = {}
    for requirement in dependencies:
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        floors[requirement.name.lower()] = Version(floor)
    assert _lowest() == floors
    # and each pin is allowed by pyproject.toml itself (under any upper bound)
    for requirement in dependencies:
        assert requirement.specifier.contains(_lowest()[requirement.name.lower()])

"""Shell completion: the checked-in scripts are current, and real shells offer useful candidates."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from projctl import model
from projctl.store import ProjectStore

from .conftest import PROJCTL, require_tool, wait_until

# Many whole processes each (~9 s of the suite): in the slow run, which CI runs every
# time too; the README's command stays fast.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
BIN = str(Path(PROJCTL).parent)

COMMANDS = {"create", "update", "delete", "list", "show", "emit", "watch", "serve", "server"}
STATUSES = set(model.STATUSES)

BashComplete = Callable[[list[str]], list[str]]


def _generator() -> Callable[[str], str]:
    spec = importlib.util.spec_from_file_location("generate", COMPLETIONS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate  # type: ignore[no-any-return]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_checked_in_scripts_are_current(shell: str) -> None:
    checked_in = (COMPLETIONS / f"projctl.{shell}").read_text()
    assert checked_in == _generator()(shell), (
        f"completions/projctl.{shell} is stale: run python completions/generate.py"
    )


@pytest.fixture
def projects(store: ProjectStore) -> dict[str, str]:
    """Two projects whose ids completion must offer, id -> name."""
    created = [store.create(name).project for name in ("Billing API", "Web shop")]
    return {project.project_id: project.name for project in created}


def shell_environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


# -- bash: the real completion function, called the way readline calls it ----------------


@pytest.fixture
def bash_complete(bash: str) -> BashComplete:
    """Complete ``words`` (the last one being typed) with bash; skips without bash."""

    def complete(words: list[str]) -> list[str]:
        script = (
            f"source {shlex.quote(str(COMPLETIONS / 'projctl.bash'))}\n"
            f"COMP_WORDS=({' '.join(shlex.quote(word) for word in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n"
            "_projctl_completion projctl\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run(
            [bash, "--norc", "--noprofile", "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            env=shell_environment(),
            check=True,
        )
        return [line for line in done.stdout.splitlines() if line]

    return complete


def test_bash_completes_commands(bash_complete: BashComplete) -> None:
    assert set(bash_complete(["projctl", ""])) >= COMMANDS


def test_bash_completes_existing_ids(bash_complete: BashComplete, projects: dict[str, str]) -> None:
    escaped = [name.replace(" ", "\\ ") for name in projects.values()]
    assert sorted(bash_complete(["projctl", "update", ""])) == sorted([*projects, *escaped])
    assert sorted(bash_complete(["projctl", "show", "proj_"])) == sorted(projects)
    watched = bash_complete(["projctl", "watch", "--project", ""])
    assert sorted(watched) == sorted([*projects, *escaped])


def test_bash_completes_statuses_and_event_types(bash_complete: BashComplete) -> None:
    assert set(bash_complete(["projctl", "create", "--status", ""])) == STATUSES
    assert set(bash_complete(["projctl", "watch", "--event", ""])) == {
        "project_created",
        "project_updated",
        "project_deleted",
    }


def test_bash_completes_event_types_seen_in_the_journal(
    bash_complete: BashComplete, store: ProjectStore
) -> None:
    """``watch --event``: the lifecycle events and every type the journal holds; ``emit``'s
    EVENT_TYPE: the conventional names and every emitted type the journal holds."""
    project_id = store.create("Billing API").project.project_id
    store.emit(project_id, "deployed", {"env": "prod"})
    store.emit(project_id, "tests_run")
    assert bash_complete(["projctl", "watch", "--event", ""]) == [
        "project_created",
        "project_updated",
        "project_deleted",
        "deployed",
        "tests_run",
    ]
    assert bash_complete(["projctl", "watch", "--event", "dep"]) == ["deployed"]
    assert bash_complete(["projctl", "emit", project_id, ""]) == [
        "project_modified",
        "documentation_generated",
        "tests_generated",
        "tests_run",
        "deployed",
    ]
    assert bash_complete(["projctl", "emit", project_id, "te"]) == ["tests_generated", "tests_run"]
    # first the project: its id, and its name (escaped for bash)
    assert bash_complete(["projctl", "emit", ""]) == [project_id, "Billing\\ API"]


def test_bash_completes_options(bash_complete: BashComplete) -> None:
    offered = set(bash_complete(["projctl", "create", "--"]))
    assert {"--type", "--status", "--owner", "--description", "--json", "--quiet"} <= offered


# -- fish: its own completion engine, names shown as descriptions ----------------------------


@pytest.fixture
def fish_complete() -> Callable[[str], list[str]]:
    """Complete the command ``line`` with fish's own engine; skips without fish."""
    fish = require_tool("fish")

    def complete(line: str) -> list[str]:
        script = (
            f"source {shlex.quote(str(COMPLETIONS / 'projctl.fish'))}; "
            f"complete --do-complete {shlex.quote(line)}"
        )
        done = subprocess.run(
            [fish, "--no-config", "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            env=shell_environment(),
            check=True,
        )
        return [line for line in done.stdout.splitlines() if line]

    return complete


def test_fish_completes_commands_ids_and_statuses(
    fish_complete: Callable[[str], list[str]], projects: dict[str, str]
) -> None:
    commands = {line.split("\t")[0] for line in fish_complete("projctl ")}
    assert commands >= COMMANDS
    ids = fish_complete("projctl update ")
    assert sorted(ids) == sorted(f"{pid}\t{name}" for pid, name in projects.items())
    statuses = {line.split("\t")[0] for line in fish_complete("projctl create --status ")}
    assert statuses == STATUSES


# -- zsh: an interactive shell on a real terminal, TAB pressed as a person would -------------


class Zsh:
    def __init__(self, zsh: str, tmux: str) -> None:
        self.tmux = tmux
        self.socket = f"projctl-zsh-{os.getpid()}-{time.monotonic_ns()}"
        environment = " ".join(
            f"{name}={shlex.quote(value)}"
            for name, value in shell_environment().items()
            if name in ("PATH", "HOME", "PROJCTL_DB", "PROJCTL_NO_BROADCAST", "PROJCTL_OWNER")
        )
        self._tmux(
            "new-session", "-d", "-s", "z", "-x", "160", "-y", "40",
            f"env -i TERM=xterm {environment} {shlex.quote(zsh)} -f",
        )  # fmt: skip
        self.type_line(
            "autoload -Uz compinit && compinit -u && "
            f"source {shlex.quote(str(COMPLETIONS / 'projctl.zsh'))} && "
            "zstyle ':completion:*' list-rows-first true && clear"
        )
        wait_until(self._at_a_fresh_prompt, what="zsh ready at a clear prompt")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    def type_line(self, text: str) -> None:
        self._tmux("send-keys", "-t", "z", text, "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "z")

    def _at_a_fresh_prompt(self) -> bool:
        lines = [line for line in self.screen().splitlines() if line.strip()]
        return len(lines) == 1 and lines[0].rstrip().endswith(("#", "%"))

    def complete(self, text: str, expect: Callable[[str], bool]) -> str:
        """Type ``text``, press TAB until the screen shows what ``expect`` wants (insert, then
        list), and return the screen."""
        self._tmux("send-keys", "-t", "z", "C-u")
        self._tmux("send-keys", "-t", "z", "clear", "Enter")
        wait_until(self._at_a_fresh_prompt, what="a clear zsh prompt")
        self._tmux("send-keys", "-t", "z", "-l", text)
        wait_until(lambda: text.rstrip() in self.screen(), what=f"{text!r} typed")

        def offered() -> str:
            screen = self.screen()
            return screen if expect(screen) else ""

        for _press in range(20):
            self._tmux("send-keys", "-t", "z", "Tab")
            with contextlib.suppress(AssertionError):
                return wait_until(offered, timeout=1, what="the completion")
        raise AssertionError(f"zsh never offered what was expected:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10
        )


@pytest.fixture
def zsh() -> Iterator[Zsh]:
    shell = Zsh(require_tool("zsh"), require_tool("tmux"))
    yield shell
    shell.close()


def test_zsh_completes_commands_ids_and_statuses(zsh: Zsh, projects: dict[str, str]) -> None:
    screen = zsh.complete("projctl ", lambda s: all(c in s for c in ("create", "watch", "serve")))
    assert all(command in screen for command in COMMANDS)
    screen = zsh.complete("projctl update ", lambda s: all(pid in s for pid in projects))
    assert all(name in screen for name in projects.values())  # names shown as descriptions
    screen = zsh.complete("projctl create --status ", lambda s: "in_progress" in s)
    assert all(status in screen for status in STATUSES)


# -- the cost of a TAB ----------------------------------------------------------------------


def test_completing_ids_imports_nothing_heavy(projects: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", PROJCTL],
        env={
            **os.environ,
            "_PROJCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": "projctl update ",
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert sorted(done.stdout.splitlines()) == sorted([*projects, "Billing\\ API", "Web\\ shop"])
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    heavy = {"rich", "rich.live", "websockets", "projctl.server", "projctl.watch", "pydantic"}
    assert imported & heavy == set()


def test_install_completion_still_works(tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    done = subprocess.run(
        [PROJCTL, "--install-completion", "bash"],
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bash completion installed" in done.stdout
    installed = (home / ".bash_completions" / "projctl.sh").read_text()
    assert installed.strip() == (COMPLETIONS / "projctl.bash").read_text().strip()
    assert "projctl.sh" in (home / ".bashrc").read_text()


def test_bash_completes_names_escaped_as_one_shell_word(
    bash_complete: BashComplete, projects: dict[str, str], store: ProjectStore
) -> None:
    plain = store.create("billing-api").project.project_id
    assert bash_complete(["projctl", "delete", "bill"]) == ["billing-api"]
    # Names with spaces come escaped, so bash inserts them as one word.
    assert sorted(bash_complete(["projctl", "show", ""])) == sorted(
        [*projects, plain, "billing-api", "Billing\\ API", "Web\\ shop"]
    )
    # What was typed so far, as bash holds it (escaped), is matched unescaped.
    assert bash_complete(["projctl", "show", "Billing\\ A"]) == ["Billing\\ API"]
    assert bash_complete(["projctl", "show", "Bil"]) == ["Billing\\ API"]
    odd = store.create("it's $HOME").project.project_id
    assert bash_complete(["projctl", "show", "it"]) == ["it\\'s\\ \\$HOME"]
    # Inserted as completed, the word is the name again.
    assert shlex.split("it\\'s\\ \\$HOME") == [store.get(odd).name]


def test_the_readme_leads_bash_users_with_what_works_on_any_bash() -> None:
    """``source`` from ~/.bashrc needs nothing more; the completions folder needs the
    bash-completion package, which a fresh Debian lacks: the README says so."""
    readme = (COMPLETIONS.parent / "README.md").read_text()
    section = readme.split("## Shell completion", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| bash | ")]
    assert row.index("source") < row.index("bash-completion/completions")
    assert "`bash-completion` package" in row
    script = (COMPLETIONS / "projctl.bash").read_text()
    # Nothing from the bash-completion package: the script runs in a bare bash.
    assert "_init_completion" not in script
    assert "_get_comp_words_by_ref" not in script

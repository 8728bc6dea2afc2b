"""What ``projctl serve`` refuses (files others may read, plain ws:// beyond loopback), and the
tokens it makes when given none.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from projctl.errors import ConfigError
from projctl.server import read_token_file

from ._remote import (
    ServerProcess,
    TeamServer,
    Tls,
    one_error,
    secret,
    serving,
    tls_args,
    write_token_file,
)


def test_serve_refuses_a_token_file_others_may_read(tmp_path: Path, tls: Tls) -> None:
    tokens = write_token_file(tmp_path / "tokens", secret("read"), secret("write"), mode=0o644)
    args = [*tls_args(tls, 0), "--token-file", str(tokens)]
    with serving(tmp_path / "server", args) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        f"Error: the token file {tokens} may be read by others (mode 0644); chmod 600 it\n"
    )
    assert server.out.read_text() == ""


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_serve_refuses_a_key_file_others_may_read(tmp_path: Path, tls: Tls, mode: int) -> None:
    tls.key.chmod(mode)
    with serving(tmp_path / "server", tls_args(tls, 0)) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        f"Error: the key file {tls.key} may be read by others (mode {mode:04o}); chmod 600 it\n"
    )
    assert server.out.read_text() == ""
    assert not server.db.exists()


@pytest.mark.parametrize("token", ["a" * 16 + " b", "a" * 16 + "\u00e9", "a" * 16 + "\x7f"])
def test_a_token_file_holds_only_tokens_a_header_can_carry(tmp_path: Path, token: str) -> None:
    path = write_token_file(tmp_path / "tokens", secret("read"), token)
    with pytest.raises(ConfigError) as refused:
        read_token_file(path)
    assert str(refused.value) == (
        f"{path}, line 3: expected 'read: TOKEN' or 'write: TOKEN' "
        "(a token of 16 or more visible ASCII characters)"
    )
    assert token not in str(refused.value)


def test_serve_refuses_plain_ws_beyond_loopback(tmp_path: Path) -> None:
    args = ["--host", "0.0.0.0", "--port", "0"]
    with serving(tmp_path / "server", args) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        "Error: listening beyond loopback (0.0.0.0) without TLS sends tokens and data in the "
        "clear: give --certfile and --keyfile, or --insecure\n"
    )
    assert not server.db.exists()


def test_serve_insecure_beyond_loopback_warns_once(tmp_path: Path) -> None:
    # It listens on every address; this test connects to none of them.
    args = ["--host", "0.0.0.0", "--port", "0", "--insecure"]
    with serving(
        tmp_path / "server", args, ready=lambda server: FRESH_TOKENS in server.stderr()
    ) as server:
        pass
    assert server.process.returncode == 0
    lines = server.stderr().splitlines()
    assert lines[0] == (
        "Warning: serving plain ws:// beyond loopback: tokens and data cross the network "
        "unencrypted"
    )
    assert sum(line.startswith("Warning: ") for line in lines) == 1
    assert any(
        re.fullmatch(r".* INFO projctl\.server: serving ws://0\.0\.0\.0:\d+/ws .*", line)
        for line in lines
    )


FRESH_TOKENS = "projctl: fresh tokens are in "


def _announced(server: ServerProcess) -> tuple[Path, dict[str, list[str]]]:
    """The tokens ``serve`` made: stderr names their file (mode 0600), never a token."""
    match = re.search(rf"^{FRESH_TOKENS}(.+) \(mode 0600\)$", server.stderr(), re.MULTILINE)
    assert match, server.stderr()
    path = Path(match[1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read, write = read_token_file(path)  # the --token-file format: reusable as is
    return path, {"read": sorted(read), "write": sorted(write)}


def test_serve_writes_fresh_tokens_to_a_private_file_and_never_prints_them(
    tmp_path: Path, tls: Tls
) -> None:
    args = [*tls_args(tls), "--require-token"]
    with serving(
        tmp_path / "server",
        args,
        ready=lambda server: FRESH_TOKENS in server.stderr() and server.serves(tls.ca),
    ) as server:
        token_path, announced = _announced(server)
        assert [len(announced["read"]), len(announced["write"])] == [1, 1], server.stderr()
        (read,), (write,) = announced["read"], announced["write"]
        team = TeamServer(server, tls, read, write, tmp_path / "elsewhere")
        created = team.run("create", "With a fresh token")
        assert created.returncode == 0, created.stderr
        assert team.run("list", token=read).stdout.startswith(created.stdout.strip())
        assert one_error(team.run("create", "x", token=read), 5).endswith("a write token")
        assert one_error(team.run("list", token="y" * 32), 5).endswith("to one it holds")
        watched = team.run(
            "watch", "--json", "--since", "0", "--count", "1", "--timeout", "20", token=read
        )
        assert watched.returncode == 0, watched.stderr
        assert team.run("delete", "With a fresh token").returncode == 0
        log = server.stderr()
    assert server.process.returncode == 0
    # No line of stderr (the log; under systemd, the journal) holds a token.
    assert [line for line in log.splitlines() if read in line or write in line] == []
    assert server.out.read_text() == ""
    assert not token_path.exists()  # the tokens ended with the server


def test_serve_on_loopback_makes_only_a_write_token(tmp_path: Path, tls: Tls) -> None:
    with serving(
        tmp_path / "server",
        tls_args(tls),
        ready=lambda server: FRESH_TOKENS in server.stderr() and server.serves(tls.ca),
    ) as server:
        _, announced = _announced(server)
        assert [len(announced["read"]), len(announced["write"])] == [0, 1], server.stderr()
        team = TeamServer(server, tls, "", announced["write"][0], tmp_path / "elsewhere")
        assert team.run("create", "x").returncode == 0
        # Without a read token reading is open (on loopback); a write still needs the token.
        assert team.run("list", PROJCTL_TOKEN=None).returncode == 0
        refused = one_error(team.run("create", "y", PROJCTL_TOKEN=None), 5)
        assert refused.endswith("a context with --token-file")

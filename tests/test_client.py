"""What the team client and the subscriber share, written once: the client TLS context, the
one line for a server that turns a client away, and the pauses between attempts; and the
team protocol's ``journal`` read, which the team server's backend follows a seq with."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from projctl import _client, remote, subscribe


def refused(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "refused", Headers(), b""))


def test_backoff_doubles_up_to_its_bound() -> None:
    assert list(subscribe.backoff(0.2, count=7)) == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_backoff_reads_its_bounds_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(_client, "BACKOFF_MAX", 0.03)
    assert list(subscribe.backoff(count=4)) == [0.01, 0.02, 0.03, 0.03]


def test_the_team_client_retries_three_times_tripling_its_pause() -> None:
    pauses = subscribe.backoff(remote.RETRY_FIRST, factor=3, count=remote.RETRIES)
    assert [round(pause, 6) for pause in pauses] == [0.1, 0.3, 0.9]


def test_client_tls_only_for_wss(tmp_path: Path) -> None:
    assert subscribe.client_tls("ws://127.0.0.1:1/ws", None) is None
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = subscribe.client_tls("wss://127.0.0.1:1", str(ca_file))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_line_naming_the_server(status: int) -> None:
    error = subscribe.refusal(refused(status), "wss://team.example:8443")
    assert (
        str(error)
        == {
            401: "the server at wss://team.example:8443 needs a token and none was sent "
            "(HTTP 401): set PROJCTL_TOKEN, PROJCTL_TOKEN_FILE or a context with --token-file",
            403: "the server at wss://team.example:8443 refused the request (HTTP 403): a read "
            "token may only read; a change needs a write token",
        }[status]
    )
    given = _client.refused(status, "wss://t:1", token_from="PROJCTL_TOKEN")
    assert "from PROJCTL_TOKEN" in str(given)


def test_another_refused_handshake_is_one_line() -> None:
    error = subscribe.refusal(refused(400), "ws://127.0.0.1:1/ws")
    assert str(error) == "the server at ws://127.0.0.1:1/ws refused the connection (HTTP 400)"


def test_a_certificate_for_another_name_says_so_not_trust_its_ca() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = 62
    error.verify_message = "Hostname mismatch, certificate is not valid for 'team.example'."
    line = str(_client.untrusted(error, "wss://team.example:8443"))
    assert "not for that host name" in line
    assert "PROJCTL_CA_FILE" not in line
    error.verify_code = 20
    error.verify_message = "unable to get local issuer certificate"
    assert str(_client.untrusted(error, "wss://team.example:8443")).endswith(
        "trust its CA with PROJCTL_CA_FILE"
    )

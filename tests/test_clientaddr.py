"""The client address behind a reverse proxy (``trusted_proxies``): forwarding
headers are believed only from listed peers, read from the right; sign-in
throttling then locks out the guesser, not every user behind the proxy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import Daemon

from notifyd.api.clientaddr import client_address

XFF = b"x-forwarded-for"


@pytest.mark.parametrize(
    ("peer", "headers", "trusted", "expected"),
    [
        # no trusted proxies: the peer, whatever it sends
        ("127.0.0.1", [(XFF, b"1.2.3.4")], [], "127.0.0.1"),
        # an untrusted peer cannot forge its address
        ("9.9.9.9", [(XFF, b"1.2.3.4")], ["127.0.0.1"], "9.9.9.9"),
        ("127.0.0.1", [(XFF, b"1.2.3.4")], ["127.0.0.1"], "1.2.3.4"),
        # read from the right: the first hop that is not a trusted proxy
        (
            "127.0.0.1",
            [(XFF, b"6.6.6.6, 1.2.3.4, 10.0.0.5")],
            ["127.0.0.0/8", "10.0.0.0/8"],
            "1.2.3.4",
        ),
        # the client's own claim (left of the first untrusted hop) is ignored
        ("127.0.0.1", [(XFF, b"6.6.6.6, 1.2.3.4")], ["127.0.0.1"], "1.2.3.4"),
        # several header lines form one chain
        ("127.0.0.1", [(XFF, b"6.6.6.6"), (XFF, b"1.2.3.4")], ["127.0.0.1"], "1.2.3.4"),
        # RFC 7239 Forwarded, with a quoted IPv6 address and port; it wins over XFF
        (
            "::1",
            [(b"forwarded", b'for="[2001:db8::1]:4711";proto=https'), (XFF, b"1.1.1.1")],
            ["::1"],
            "2001:db8::1",
        ),
        (
            "127.0.0.1",
            [(b"forwarded", b"for=192.0.2.60:8080;by=203.0.113.43")],
            ["127.0.0.1"],
            "192.0.2.60",
        ),
        # garbage or "unknown" stops the walk at the last address we trust to be real
        ("127.0.0.1", [(XFF, b"garbage")], ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", [(b"forwarded", b"for=unknown")], ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", [(XFF, b"\xff\xfe, 1.2.3.4")], ["127.0.0.1"], "1.2.3.4"),
        # an IPv4-mapped IPv6 peer matches an IPv4 network
        ("::ffff:127.0.0.1", [(XFF, b"1.2.3.4")], ["127.0.0.1/32"], "1.2.3.4"),
        # str header pairs (the raw stream path) work the same
        ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4")], ["127.0.0.1"], "1.2.3.4"),
    ],
)
def test_client_address(peer: str, headers: Any, trusted: list[str], expected: str) -> None:
    assert client_address(peer, headers, trusted) == expected


def test_a_long_forged_chain_is_read_only_in_part() -> None:
    chain = b", ".join([b"10.0.0.1"] * 10_000 + [b"1.2.3.4"])
    assert client_address("127.0.0.1", [(XFF, chain)], ["127.0.0.1"]) == "1.2.3.4"
    # every hop trusted: the walk stops after MAX_HOPS at a trusted address, not a
    # made-up one
    only_proxies = b", ".join([b"10.0.0.1"] * 10_000)
    assert client_address("127.0.0.1", [(XFF, only_proxies)], ["127.0.0.0/8", "10.0.0.0/8"]) == (
        "10.0.0.1"
    )


def _add_alice(daemon: Daemon) -> None:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": "alice", "password": "correct horse"})
        assert r.status_code == 201, r.text


def _sign_in(daemon: Daemon, password: str, client: str) -> httpx.Response:
    return httpx.post(
        f"{daemon.url}/v1/session",
        json={"username": "alice", "password": password},
        headers={"X-Forwarded-For": client},
    )


def test_behind_a_trusted_proxy_a_guesser_locks_out_only_itself(make_daemon: Any) -> None:
    daemon = make_daemon(extra_env={"NOTIFYD_TRUSTED_PROXIES": "127.0.0.1"}).start()
    _add_alice(daemon)
    for _ in range(5):
        assert _sign_in(daemon, "wrong", "203.0.113.9").status_code == 401
    r = _sign_in(daemon, "correct horse", "203.0.113.9")
    assert r.status_code == 429, r.text
    # alice, elsewhere, still signs in
    r = _sign_in(daemon, "correct horse", "198.51.100.7")
    assert r.status_code == 200, r.text
    # ntfy's streams (served on the raw socket, not through ASGI) see the same address
    r = httpx.get(f"{daemon.url}/mytopic/json?poll=1", auth=("alice", "wrong"),
                  headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    assert r.status_code == 429, r.text


def test_without_trusted_proxies_the_header_is_ignored(daemon: Daemon) -> None:
    _add_alice(daemon)
    for _ in range(5):
        assert _sign_in(daemon, "wrong", "203.0.113.9").status_code == 401
    # a different forwarded address does not buy the guesser new tries
    r = _sign_in(daemon, "correct horse", "198.51.100.7")
    assert r.status_code == 429, r.text

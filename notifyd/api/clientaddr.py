"""The client's address: the peer, or what a trusted reverse proxy says it is.

Behind Caddy or nginx every connection comes from the proxy, so keying sign-in
throttling on the peer would lock a user out for everyone behind it. The proxy
names the real client in ``X-Forwarded-For`` (or RFC 7239 ``Forwarded``), but
any client can send those headers, so they are believed only from the peers in
``trusted_proxies``. The chain is read from the right: each hop was appended by
the one before it, so the first address that is not itself a trusted proxy is
the client as far as we can know; anything to its left is whatever that client
claimed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: hops read at most from a forwarding header (a hostile chain can be long)
MAX_HOPS = 20


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    # config validation already refused bad entries; skip rather than fail here
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    return tuple(out)


def _ip(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _hops(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[str]:
    """The forwarding chain, left (client) to right (nearest proxy). ``Forwarded``
    wins over ``X-Forwarded-For`` when both are present, as RFC 7239 intends."""
    forwarded: list[str] = []
    xff: list[str] = []
    for raw_name, raw_value in headers:
        name, value = _text(raw_name).lower(), _text(raw_value)
        if name == "forwarded":
            for element in value.split(","):
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    if key.lower() == "for":
                        forwarded.append(val)
        elif name == "x-forwarded-for":
            xff.extend(value.split(","))
    return (forwarded or xff)[-MAX_HOPS:]


def client_address(
    peer: str, headers: Iterable[tuple[bytes | str, bytes | str]], trusted: Iterable[str]
) -> str:
    """The client's address for a connection from ``peer`` with these request
    headers (pairs of bytes as in an ASGI scope, or of str), given ``trusted_proxies``."""
    networks = _networks(tuple(trusted))
    if not networks:
        return peer
    peer_ip = _ip(peer)
    if peer_ip is None or not _trusted(peer_ip, networks):
        return peer
    client = peer_ip
    for hop in reversed(_hops(headers)):
        ip = _ip(hop)
        if ip is None:  # "unknown", an obfuscated identifier, garbage: stop here
            break
        client = ip
        if not _trusted(ip, networks):
            break
    return str(client)


def with_client_address(app: Any, trusted: Any) -> Any:
    """ASGI middleware: ``scope["client"]`` becomes the address :func:`client_address`
    finds, so every route, throttle and log line sees the real client.
    ``trusted`` is called per request (the setting can change on reload)."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        client = scope.get("client")
        cidrs = trusted()
        if cidrs and client and scope["type"] in ("http", "websocket"):
            address = client_address(str(client[0]), scope.get("headers", ()), cidrs)
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        await app(scope, receive, send)

    return wrapped

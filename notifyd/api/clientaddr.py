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
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
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


# -- identity from a trusted reverse proxy (forward auth) ------------------------------
#
# Authelia, Authentik and oauth2-proxy name the signed-in user in a header such as
# Remote-User (``proxy_user_header``) and their groups in another
# (``proxy_groups_header``, comma-separated). Anyone can send those headers, so
# they are believed only when the TCP peer itself is in ``trusted_proxies``, and
# removed from every request before anything reads them. What the proxy said is
# handed to authentication (:func:`.auth.resolve`) through a context variable
# that is set for each request, so that every door sees it, whatever subset of
# the headers it passes along.


@dataclass(frozen=True)
class ProxyIdentity:
    """What a trusted proxy said about the caller of this request."""

    user: str
    groups: tuple[str, ...] = ()
    #: the user header came more than once: believe none of the copies
    repeated: bool = False


_identity: ContextVar[ProxyIdentity | None] = ContextVar("notifyd_proxy_identity", default=None)


def proxy_identity() -> ProxyIdentity | None:
    """What a trusted proxy said about the caller of the current request, if anything."""
    return _identity.get()


def set_proxy_identity(identity: ProxyIdentity | None) -> Token[ProxyIdentity | None]:
    return _identity.set(identity)


def identity_headers(config: Any) -> tuple[str, ...]:
    """The lower-case names of the proxy identity headers configured (maybe none)."""
    names = (config.proxy_user_header, config.proxy_groups_header)
    return tuple(n.lower() for n in names if n)


def _identity_from(
    users: list[str], groups: list[str], peer: str | None, config: Any
) -> ProxyIdentity | None:
    if peer is None or not users:
        return None
    ip = _ip(peer)
    if ip is None or not _trusted(ip, _networks(tuple(config.trusted_proxies))):
        return None
    # a field sent twice arrives as two values, or (raw stream heads) joined with
    # ", " as RFC 9110 combines them; a user name never holds a comma
    repeated = len(users) > 1 or "," in users[0]
    user = users[0].strip()
    if not user and not repeated:
        return None
    names = [g.strip() for value in groups for g in value.split(",")[:200]]
    return ProxyIdentity(user, tuple(g for g in names if g), repeated)


def take_proxy_identity(
    peer: str | None, headers: Iterable[tuple[bytes, bytes]], config: Any
) -> tuple[list[tuple[bytes, bytes]], ProxyIdentity | None]:
    """ASGI scope headers without the proxy identity headers, and what they said if
    ``peer`` is a trusted proxy (``peer`` None: the Unix socket, never trusted)."""
    names = identity_headers(config)
    user_name = names[0].encode() if names else b""
    kept: list[tuple[bytes, bytes]] = []
    users: list[str] = []
    groups: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower.decode("latin-1") not in names:
            kept.append((name, value))
        elif lower == user_name:
            users.append(value.decode("latin-1"))
        else:
            groups.append(value.decode("latin-1"))
    return kept, _identity_from(users, groups, peer, config)


def take_head_identity(
    peer: str | None, headers: dict[str, str], config: Any
) -> ProxyIdentity | None:
    """:func:`take_proxy_identity` for a raw stream head's headers (lower-case names,
    repeated fields joined), which lose the identity headers in place."""
    names = identity_headers(config)
    if not names:
        return None
    user = headers.pop(names[0], None)
    group = headers.pop(names[1], None) if len(names) > 1 else None
    return _identity_from(
        [] if user is None else [user], [] if group is None else [group], peer, config
    )


def with_proxy_identity(app: Any, config: Callable[[], Any], peer: str | None) -> Any:
    """ASGI middleware for one connection from ``peer`` (the TCP peer; None for the
    Unix socket): removes the proxy identity headers from every request and, when
    ``peer`` is a trusted proxy, makes what they said :func:`proxy_identity` while
    the request runs. Outermost, so that nothing before it reads them."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        cfg = config()
        if scope["type"] not in ("http", "websocket") or not cfg.proxy_user_header:
            await app(scope, receive, send)
            return
        headers, identity = take_proxy_identity(peer, scope.get("headers", ()), cfg)
        token = _identity.set(identity)
        try:
            await app({**scope, "headers": headers}, receive, send)
        finally:
            _identity.reset(token)

    return wrapped

"""One destination policy for every outbound connection (``private_destinations``).

A channel makes the daemon connect somewhere a user chose: a push endpoint, an
Apprise URL's server, a plugin's webhook. Without a policy any user could aim
those connections at this machine or the private network behind it (server-side
request forgery: the cloud metadata service at 169.254.169.254, an admin panel on
127.0.0.1, …). ``private_destinations`` decides who may:

- ``admins`` (default): channels owned by an admin (or the socket user) may reach
  private addresses; everyone else's may not;
- ``everyone``: no restriction (``webpush_allow_private_endpoints = true`` is an
  alias of this);
- ``nobody``: no channel may.

It is enforced twice:

1. **At creation** (:func:`check_destinations`): the hosts a channel will connect
   to are classified in every spelling the C library accepts (``127.1``,
   ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, ``localhost.``, …) and
   names are resolved. A refusal is a 422 that names the setting. A name that does
   not resolve is allowed here: the send-time check decides.
2. **At send time**, on the address actually connected to, so that a name that
   resolved publicly at creation and privately later (DNS rebinding) gains
   nothing. :func:`install` wraps ``socket.getaddrinfo`` once per process; inside
   :func:`outbound` with ``allow_private=False`` the wrapper drops private results
   and raises :class:`PrivateDestination` when none remain. Every client the
   channels use resolves through it, also for literal IPs: trio's
   ``getaddrinfo`` (httpx/httpcore's trio backend, Web Push) calls
   ``socket.getaddrinfo`` in the task or in a thread that carries the task's
   context; urllib3 (requests, so most Apprise services) and smtplib (through
   ``socket.create_connection``) call it in the Apprise worker thread, which
   ``trio.to_thread.run_sync`` starts with a copy of the task's context.

The same context caps what a peer may send back: :func:`install` also wraps the
reader of every ``http.client`` response (urllib3/requests) and ``smtplib`` reply
read inside :func:`outbound`, so an endless body or an endless multi-line SMTP
reply stops at :data:`RESPONSE_CAP` bytes with :class:`ResponseTooLarge`
instead of filling memory. httpx callers cap their own reads (see the Web Push
channel).

This module is headless (no web or CLI imports) and safe to import anywhere.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import ipaddress
import smtplib
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import trio

POLICIES = ("admins", "everyone", "nobody")
#: the most bytes read from a peer's answer (status line, headers and body)
RESPONSE_CAP = 64 * 1024
#: seconds a creation-time lookup may take before the name counts as unknown
RESOLVE_TIMEOUT = 3.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that only mean something inside a machine or a site; refused without a
# lookup (mDNS ``.local`` may not even go through getaddrinfo's usual path).
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class PrivateDestination(socket.gaierror):
    """Raised by the guarded ``getaddrinfo`` when every address of a host is
    private and the current send may not reach private addresses. A subclass of
    ``gaierror`` so that each HTTP/SMTP library reports it as a failed lookup."""


class ResponseTooLarge(OSError):
    """A peer answered with more than :data:`RESPONSE_CAP` bytes; reading stopped."""


class DestinationRefused(ValueError):
    """A channel's destination is private and its owner may not reach it."""


def is_private_address(ip: IPAddress) -> bool:
    """True for every address that is not globally routable unicast: loopback,
    private, link-local, unspecified, multicast, reserved, shared (100.64/10),
    site-local, and IPv6 forms that embed such an IPv4 address (IPv4-mapped,
    IPv4-compatible, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_private_address(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_private_address(ip.sixtofour)
        for net in _NAT64:
            if ip in net:
                return is_private_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if int(ip) >> 32 == 0:  # ::a.b.c.d, IPv4-compatible (deprecated), and ::, ::1
            return True
        if ip.is_site_local:
            return True
    elif ip in _SHARED_V4:
        return True
    return (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
        or ip.is_multicast or ip.is_reserved or not ip.is_global
    )  # fmt: skip


def host_of(target: str) -> str:
    """The host of a URL (``scheme://host:port/…``) or of a bare host, normalised:
    lower case, no brackets, no IPv6 zone id, no trailing dot."""
    host = target
    if "://" in target:
        try:
            host = urlsplit(target).hostname or ""
        except ValueError:
            host = ""
    host = unquote(host).strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.partition("%")[0]  # fe80::1%eth0: the zone names an interface, not a host
    return host.rstrip(".")


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes without any lookup, or None for a name.

    IPv4 follows ``inet_aton``, which is what the C resolver connects to: ``127.1``,
    ``2130706433``, ``0x7f000001``, ``017700000001`` and ``0`` are all addresses.
    """
    host = host_of(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_local_name(host: str) -> bool:
    host = host_of(host)
    return not host or host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES)


@dataclass
class Verdict:
    """What :func:`classify` found: ``private``, ``public`` or ``unknown`` (a name
    that did not resolve), and the address or name that decided it."""

    kind: str
    host: str
    because: str = ""

    @property
    def private(self) -> bool:
        return self.kind == "private"


_real_getaddrinfo = socket.getaddrinfo


def classify_literal(target: str) -> Verdict | None:
    """The verdict for a URL or host that needs no lookup (an address in any
    spelling, a local name), else None."""
    host = host_of(target)
    if is_local_name(host):
        return Verdict("private", host, "a local name")
    ip = literal_address(host)
    if ip is not None:
        return Verdict("private" if is_private_address(ip) else "public", host, str(ip))
    return None


def classify(target: str) -> Verdict:
    """Classify a URL or host, resolving names (blocking: call it in a thread)."""
    known = classify_literal(target)
    if known is not None:
        return known
    host = host_of(target)
    try:
        infos = _real_getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return Verdict("unknown", host, "does not resolve")
    for info in infos:
        ip = _sockaddr_ip(info[4])
        if ip is not None and is_private_address(ip):
            return Verdict("private", host, f"resolves to {ip}")
    return Verdict("public", host)


_lookups = trio.CapacityLimiter(8)


async def classify_async(target: str, timeout: float = RESOLVE_TIMEOUT) -> Verdict:
    """:func:`classify` off the trio loop; a lookup slower than ``timeout`` (or
    one that cannot get a thread) makes the host ``unknown``."""
    known = classify_literal(target)
    if known is not None:
        return known
    with trio.move_on_after(timeout):
        return await trio.to_thread.run_sync(
            classify, target, limiter=_lookups, abandon_on_cancel=True
        )
    return Verdict("unknown", host_of(target), "lookup timed out")


def may_reach_private(policy: str, *, owner_is_admin: bool) -> bool:
    """May a channel whose owner is (or is not) an admin reach private addresses
    under ``policy`` (``Config.destination_policy``)?"""
    if policy == "everyone":
        return True
    if policy == "nobody":
        return False
    return owner_is_admin


async def owner_may_reach_private(config: Any, store: Any, user_id: int) -> bool:
    """:func:`may_reach_private` for the user ``user_id`` (admins and the socket
    user count as admins), looked up in ``store``."""
    policy: str = config.destination_policy
    if policy in ("everyone", "nobody"):
        return policy == "everyone"
    user = await store.get_user_by_id(user_id)
    is_admin = user is not None and (user.role == "admin" or user.name == config.socket_user)
    return may_reach_private(policy, owner_is_admin=is_admin)


def refusal(policy: str, host: str, because: str) -> str:
    """The message for a refused destination: what, why, and which key to change."""
    who = {"admins": "only channels of admins may", "nobody": "no channel may"}.get(
        policy, "this channel may not"
    )
    detail = f" ({because})" if because and because != host else ""
    return (
        f"{host or 'an empty host'}{detail} is on this machine or a private network, and "
        f"private_destinations = {policy}: {who} reach such addresses "
        f"(an admin can change private_destinations)"
    )


async def check_destinations(targets: Iterable[str], *, allow_private: bool, policy: str) -> None:
    """Refuse ``targets`` (URLs or hosts) that are private, unless allowed.

    Raises:
        DestinationRefused: naming the host and ``private_destinations``.
    """
    if allow_private:
        return
    for target in targets:
        verdict = await classify_async(target)
        if verdict.private:
            raise DestinationRefused(refusal(policy, verdict.host, verdict.because))


# -- send time ---------------------------------------------------------------


@dataclass
class Outbound:
    """The rules of one send, visible to everything it runs (tasks and threads)."""

    allow_private: bool
    policy: str = "admins"
    response_cap: int = RESPONSE_CAP
    #: hosts whose every address was refused during this send
    refused: set[str] = field(default_factory=set)
    #: a peer's answer was cut at ``response_cap``
    oversized: bool = False

    def refusal(self) -> str:
        hosts = ", ".join(sorted(self.refused))
        return refusal(self.policy, hosts, "")


_current: contextvars.ContextVar[Outbound | None] = contextvars.ContextVar(
    "notifyd_outbound", default=None
)


def current() -> Outbound | None:
    """The rules of the send running in this task or thread, if any."""
    return _current.get()


def allows_private() -> bool:
    """Whether the current send may reach private addresses (True outside a send).
    Plugins that pool connections keep separate pools for the two cases, so a
    connection opened for an allowed send is never reused by a restricted one."""
    rule = _current.get()
    return rule is None or rule.allow_private


@contextmanager
def outbound(allow_private: bool, policy: str = "admins") -> Iterator[Outbound]:
    """Run one send under the policy (see the module docstring)."""
    install()
    rule = Outbound(allow_private=allow_private, policy=policy)
    token = _current.set(rule)
    try:
        yield rule
    finally:
        _current.reset(token)


def _sockaddr_ip(sockaddr: Any) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
    except (ValueError, IndexError, TypeError):
        return None


def _guarded_getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0,  # noqa: A002
                         proto: int = 0, flags: int = 0) -> list[Any]:  # fmt: skip
    infos = _real_getaddrinfo(host, port, family, type, proto, flags)
    rule = _current.get()
    if rule is None or rule.allow_private:
        return infos
    kept = []
    for info in infos:
        ip = _sockaddr_ip(info[4]) if info[0] in (socket.AF_INET, socket.AF_INET6) else None
        if ip is not None and not is_private_address(ip):
            kept.append(info)
    if kept:
        return kept
    name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
    rule.refused.add(host_of(name))
    # EAI_FAIL rather than EAI_NONAME: trio retries an EAI_NONAME numeric lookup in
    # a thread, and a refusal is final.
    raise PrivateDestination(socket.EAI_FAIL, refusal(rule.policy, host_of(name), ""))


class _CappedReader:
    """A socket file that refuses to read more than ``cap`` bytes in total."""

    def __init__(self, raw: io.BufferedReader, rule: Outbound) -> None:
        self._raw = raw
        self._rule = rule
        self._left = rule.response_cap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def _room(self, wanted: int | None) -> int:
        # one byte more than allowed, so that "exactly the cap" and "more" differ
        room = self._left + 1
        return room if wanted is None or wanted < 0 else min(wanted, room)

    def _took(self, count: int) -> None:
        self._left -= count
        if self._left < 0:
            self._rule.oversized = True
            raise ResponseTooLarge(
                f"the answer is larger than {self._rule.response_cap // 1024} KiB; "
                "notifyd stopped reading it"
            )

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(self._room(size))
        self._took(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = self._raw.read1(self._room(size))
        self._took(len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._raw.readline(self._room(size))
        self._took(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = self._raw.readinto(view[: self._room(len(view))])
        self._took(count or 0)
        return count

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


_real_response_init = http.client.HTTPResponse.__init__
_real_getreply = smtplib.SMTP.getreply


def _capped_response_init(self: http.client.HTTPResponse, sock: Any, *args: Any,
                          **kwargs: Any) -> None:  # fmt: skip
    _real_response_init(self, sock, *args, **kwargs)
    rule = _current.get()
    if rule is not None:
        # a duck-typed stand-in: it forwards everything else to the real reader
        self.fp = cast(io.BufferedReader, _CappedReader(self.fp, rule))


def _capped_getreply(self: smtplib.SMTP) -> Any:
    rule = _current.get()
    if rule is not None and self.file is None and self.sock is not None:
        # smtplib opens its reader lazily here (again after STARTTLS)
        self.file = _CappedReader(self.sock.makefile("rb"), rule)
    return _real_getreply(self)


_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Install the send-time guard and the response cap in this process
    (idempotent). Outside :func:`outbound` both let everything through."""
    global _installed
    with _install_lock:
        if _installed:
            return
        socket.getaddrinfo = _guarded_getaddrinfo
        http.client.HTTPResponse.__init__ = _capped_response_init  # type: ignore[method-assign]
        smtplib.SMTP.getreply = _capped_getreply  # type: ignore[method-assign]
        _installed = True

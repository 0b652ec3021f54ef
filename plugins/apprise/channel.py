"""The ``apprise`` channel kind: any Apprise URL (email, Telegram, Matrix, ntfy, …).

A channel's config is ``{"url": "<apprise url>"}``. The URL holds secrets
(passwords, bot tokens, webhook keys), so it is shown only in Apprise's own
privacy-masked form, and every line Apprise logs is relayed through a filter
that blanks each part of the URL that this masked form does not show.

Apprise's API is blocking: each send runs in a worker thread under a capacity
limiter, with Apprise's socket timeouts capped below the channel's timeout.

Destinations (``private_destinations``): :meth:`AppriseChannel.destinations`
names the server a URL makes us connect to, for the check at creation. At send
time the plugin's ``notify`` runs in the worker thread that
``trio.to_thread.run_sync`` starts with a copy of the sending task's context, so
the outbox's guard (``notifyd.core.destinations``) sees every lookup that
requests/urllib3 and smtplib make there; lookups Apprise hands to its own DNS
thread pool carry the context too (:func:`_carry_context`). Redirects are off.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar

import apprise
import trio
from apprise import NotifyFormat, NotifyType
from apprise.plugins import url_to_dict
from apprise.plugins.email import NotifyEmail

from notifyd.core.channels import Channel, Delivery, DeliveryError, Message
from notifyd.core.destinations import literal_address

from . import redact
from .redact import MASK, SCHEME, capturing, pieces

WIKI = "https://github.com/caronc/apprise/wiki"

# Apprise's notify type sets the colour/icon on chat services (Slack, Discord, …).
_NOTIFY_TYPE = {4: NotifyType.WARNING, 5: NotifyType.FAILURE}
# Services with their own priority URL parameter get it, unless the URL sets one.
# Pushover's "emergency" repeats until acknowledged, so urgent stops at "high".
_SERVICE_PRIORITY = {
    "ntfy": ("min", "low", "default", "high", "max"),
    "ntfys": ("min", "low", "default", "high", "max"),
    "pover": ("low", "moderate", "normal", "high", "high"),
    "gotify": ("low", "moderate", "normal", "high", "emergency"),
    "gotifys": ("low", "moderate", "normal", "high", "emergency"),
}
# E-mail has no priority field; mail clients read these headers instead.
_EMAIL_PRIORITY = {4: {"X-Priority": "2 (High)", "Importance": "high"},
                   5: {"X-Priority": "1 (Highest)", "Importance": "high"}}  # fmt: skip


class AppriseChannel(Channel):
    """Deliver to any service Apprise knows, configured by one Apprise URL.

    Config: ``{"url": "mailto://user:password@example.com"}`` (see
    https://github.com/caronc/apprise/wiki for every service's URL format).

    Sending maps the message's title, body (the click link appended), format
    (markdown or text) and priority (see ``docs/channels_apprise.md``); icons,
    images, actions and tags are never sent. Errors: Apprise reporting a failure
    is a retryable :class:`DeliveryError`; a stored URL that Apprise can no
    longer load is a permanent one. Messages never contain the URL's secrets.

    Cancellation: a send abandons its worker thread when cancelled; the thread
    ends by itself within Apprise's socket timeouts (at most ``timeout / 3``
    per connect or read).
    """

    kind: ClassVar[str] = "apprise"
    concurrency: ClassVar[int] = 8
    timeout: ClassVar[float] = 30.0

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        # Apprise blocks a whole thread per send; bound threads, not just tasks.
        self._threads = trio.CapacityLimiter(self.concurrency)
        # Apprise imports its ~180 service modules on first use: do it at start,
        # not inside the first send's timeout.
        _ = "mailto" in apprise.NotificationManager()

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        url = config.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ValueError("url is required: an Apprise URL such as mailto://user:pass@host")
        url = url.strip()
        with capturing(pieces(url)):
            _load(url)
        return {"url": url}

    @classmethod
    def destinations(cls, config: dict[str, Any]) -> list[str]:
        url = str(config.get("url") or "")
        try:
            with capturing(pieces(url)):
                plugin = _load(url)
        except ValueError:
            return []
        return destination_hosts(plugin)

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        url = str(config.get("url") or "")
        try:
            with capturing(pieces(url)):
                plugin = _load(url)
        except ValueError:
            match = SCHEME.match(url)
            return {"url": f"{match.group(1) if match else '?'}://{MASK}", "service": None}
        return {"url": plugin.url(privacy=True), "service": plugin.service_name}

    async def send(self, delivery: Delivery) -> None:
        url = str(delivery.channel.config.get("url") or "")
        message = delivery.message()
        await trio.to_thread.run_sync(
            partial(self._send_blocking, url, message),
            limiter=self._threads,
            abandon_on_cancel=True,
        )

    def _send_blocking(self, url: str, message: Message) -> None:
        title, body, body_format = compose(message)
        # Until the URL has loaded nothing is known to be public: blank every piece.
        with capturing(pieces(url)) as capture:
            try:
                plugin = _load(url, priority=message.priority)
            except ValueError as exc:
                raise DeliveryError(
                    f"the channel's Apprise URL no longer loads ({exc}); remove and add it again",
                    retryable=False,
                ) from None
            capture.hide(redact.hidden_pieces(url, plugin.url(privacy=True)), only=True)
            capture.hide([title, body, *body.splitlines()], min_len=8)
            _cap_timeouts(plugin, self.timeout / 3)
            plugin.redirects = False  # also against ?redirect=yes in the stored URL
            if isinstance(plugin, NotifyEmail) and message.priority in _EMAIL_PRIORITY:
                present = {k.lower() for k in plugin.headers}
                for name, value in _EMAIL_PRIORITY[message.priority].items():
                    if name.lower() not in present:
                        plugin.headers[name] = value
            service = plugin.service_name
            try:
                ok = plugin.notify(
                    body=body, title=title, body_format=body_format,
                    notify_type=_NOTIFY_TYPE.get(message.priority, NotifyType.INFO),
                )  # fmt: skip
            except Exception as exc:
                # "from None": the cause's text may hold credentials (an SMTP reply, a URL).
                raise DeliveryError(f"{service}: {capture.reason(exc)}") from None
            if not ok:
                raise DeliveryError(f"{service} delivery failed: {capture.reason()}")


def compose(message: Message) -> tuple[str, str, NotifyFormat]:
    """Title, body and Apprise format for ``message``: the click link goes at
    the end of the body. Nothing else of the event is used (privacy)."""
    markdown = message.format == "markdown"
    body = message.body
    if message.click:
        link = f"<{message.click}>" if markdown else message.click
        body = f"{body}\n\n{link}" if body else link
    # Apprise refuses an empty body; a sensitive event without a link still says something.
    body_format = NotifyFormat.MARKDOWN if markdown else NotifyFormat.TEXT
    return message.title, body or message.title, body_format


def destination_hosts(plugin: Any) -> list[str]:
    """The server ``plugin`` connects to, where its URL names one: the SMTP host
    of an email URL, the host of json://, form://, xml://, ntfy, Gotify, Matrix….
    Services at a fixed address (Telegram, Pushover, …) name none: their URL's
    "host" is a token, which must neither be refused nor sent to a DNS server."""
    if isinstance(plugin, NotifyEmail):
        return [plugin.smtp_host] if plugin.smtp_host else []
    cls = type(plugin)
    host = getattr(plugin, "host", None)
    if "host" not in getattr(cls, "template_tokens", {}) or not isinstance(host, str) or not host:
        return []
    if getattr(plugin, "mode", None) == "cloud":  # ntfy://topic: the public ntfy.sh
        return []
    # Some services' URL forms put a token where the host goes (matrix://token):
    # for those, only something that looks like a server name or address counts.
    token_forms = any("{host}" not in t for t in getattr(cls, "templates", ()))
    looks_like_server = "." in host or ":" in host or literal_address(host) is not None
    return [host] if looks_like_server or not token_forms else []


def _asset() -> apprise.AppriseAsset:
    # Memory-only storage and no key generation: a channel leaves nothing on disk.
    # No redirects: a service answers, it does not send us elsewhere.
    return apprise.AppriseAsset(
        app_id="notifyd", app_desc="notifyd",
        storage_mode="memory", pgp_autogen=False, pem_autogen=False, secure_logging=True,
        http_redirects=False,
    )  # fmt: skip


def _load(url: str, priority: int | None = None) -> Any:
    """Apprise's plugin instance for ``url``; ValueError (secret-free) if it cannot load."""
    scheme_match = SCHEME.match(url)
    if not scheme_match:
        raise ValueError(
            f"not an Apprise URL: expected service://…, e.g. mailto://user:pass@host (see {WIKI})"
        )
    scheme = scheme_match.group(1).lower()
    manager = apprise.NotificationManager()
    capture = redact.current() or redact.Capture(())
    results = url_to_dict(url, secure_logging=True)
    if results is None:
        if scheme not in manager:
            raise ValueError(
                f"unknown Apprise service {scheme}:// (see {WIKI} for the URL formats)"
            )
        plugin_cls = manager[scheme]
        raise ValueError(
            f"not a valid {plugin_cls.service_name} URL{capture.because()} "
            f"(see {plugin_cls.setup_url or WIKI})"
        )
    plugin_cls = manager[results["schema"]]
    levels = _SERVICE_PRIORITY.get(results["schema"])
    if levels and priority is not None and "priority" not in results.get("qsd", {}):
        results["priority"] = levels[min(max(priority, 1), 5) - 1]
    try:
        plugin = apprise.Apprise.instantiate(results, asset=_asset(), suppress_exceptions=False)
    except Exception as exc:
        raise ValueError(
            f"not a valid {plugin_cls.service_name} URL{capture.because(exc)} "
            f"(see {plugin_cls.setup_url or WIKI})"
        ) from None
    if plugin is None:
        raise ValueError(f"{plugin_cls.service_name} is not available here{capture.because()}")
    return plugin


def _cap_timeouts(plugin: Any, limit: float) -> None:
    # Apprise's connect/read timeouts (?cto=, ?rto=) bound how long an abandoned
    # worker thread lives on after the outbox gave up on it.
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        current = getattr(plugin, attr, None)
        if isinstance(current, int | float) and current > 0:
            setattr(plugin, attr, min(current, limit))
        else:
            setattr(plugin, attr, limit)


class _ContextPool(ThreadPoolExecutor):
    """A thread pool whose jobs run in the submitter's context (a plain
    ThreadPoolExecutor runs them in the worker thread's own, empty one)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def _carry_context() -> None:
    """Apprise resolves some hosts (its HTTP policy: attachments, Nostr relays) in a
    shared thread pool and connects to the answer without resolving again; that
    pool must see the send's destination rules like the rest of the send."""
    from apprise.utils import http as apprise_http

    pool = getattr(apprise_http, "_DNS_POOL", None)
    if isinstance(pool, ThreadPoolExecutor) and not isinstance(pool, _ContextPool):
        apprise_http._DNS_POOL = _ContextPool(
            max_workers=pool._max_workers, thread_name_prefix="apprise-http-resolve"
        )


redact.install()
_carry_context()

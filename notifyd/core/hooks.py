"""Inbound webhooks: a sender's own JSON (Alertmanager, Grafana, GitHub, …) posted to a
hook's URL becomes events, published as the hook's owner.

This module is headless (the HTTP routes are ``api/routes/hooks.py``, ntfy's
``?template=`` is ``api/compat/ntfy_template.py``): making a hook, checking a
sender's credentials, reading a body into a payload, mapping the payload through
the hook's template (:mod:`notifyd.core.hooktemplates`) and publishing.

Decisions (docs/hooks.md):

* An unknown hook id and a wrong secret are the same 401 with the same message, and
  take the same work (the secret is compared against a dummy), so ids cannot be
  probed.
* Every hook credential a request presents must be right (the secret in the path,
  ``Authorization: Bearer``, ``X-Gitlab-Token``, ``X-Hub-Signature-256``,
  ``X-Gitea-Signature``), and at least one must be there.
* Precedence: what the template takes from the payload wins; the hook's ``priority``
  and ``category`` apply where the template gives none; the hook's ``tags`` are added
  to the template's.
* Nothing is stored unless every event of the request is valid (one batch).
* Payload content and secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import trio

from . import inbox
from .acl import Principal, glob_match
from .errors import BadRequest, Conflict, Forbidden, NotifydError, Unauthorized, ValidationFailed
from .hooktemplates import (  # the rules of a hook, kept where transfer.py can use them
    TEMPLATES,
    check_name,
    check_options,
    invalid,
)
from .hooktemplates.base import PayloadError, Result
from .models import MAX_TAGS, check_topic, validate_events
from .services import Services
from .store import Hook, PublishResult
from .timeutil import now_rfc3339

MAX_HOOKS_PER_USER = 100
ID_LENGTH = 16
_ID_ALPHABET = string.ascii_letters + string.digits
#: deeper payloads are refused (no sender nests this deep; it keeps every walk cheap)
MAX_DEPTH = 64
#: the one message for an unknown hook and a wrong secret
BAD_CREDENTIALS = "unknown hook or wrong secret"
_DUMMY_SECRET = secrets.token_urlsafe(32)
#: renders run in worker threads, a few at a time
_RENDER_LIMITER: trio.CapacityLimiter | None = None


def new_id() -> str:
    """16 characters of [A-Za-z0-9] (about 95 random bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def new_secret() -> str:
    """43 URL-safe characters (256 random bits)."""
    return secrets.token_urlsafe(32)


# -- making a hook --------------------------------------------------------------------------


async def _owner(svc: Services, user_id: int) -> Principal:
    user = await svc.store.get_user_by_id(user_id)
    if user is None:  # the hook goes with its user; a request raced the removal
        raise Unauthorized(BAD_CREDENTIALS)
    return await svc.accounts.principal_for(user, via="hook")


async def create(
    svc: Services,
    caller: Principal,
    *,
    name: Any,
    topic: Any,
    template: Any,
    priority: Any = None,
    category: Any = None,
    tags: Any = None,
    fields: Any = None,
) -> Hook:
    """Make a hook for ``caller``'s user. Needs the account scope; the user must be
    allowed to publish to ``topic`` (and a token's topic pattern must cover it)."""
    caller.require_account()
    name = check_name(name)
    try:
        topic = check_topic(topic)
    except ValueError as exc:
        raise ValidationFailed(f"topic: {exc}", field="topic") from None
    options = check_options(template, priority, category, tags, fields)
    owner = await _owner(svc, caller.user_id)
    if not owner.can_write(topic) or (
        caller.token_pattern is not None and not glob_match(caller.token_pattern, topic)
    ):
        raise Forbidden(f"not allowed to publish to topic {topic!r}", field="topic")
    if len(await svc.store.list_hooks(caller.user_id)) >= MAX_HOOKS_PER_USER:
        raise Conflict(
            f"you have {MAX_HOOKS_PER_USER} hooks, the most allowed; remove one first",
            code="too_many_hooks",
        )
    hook = Hook(
        id=new_id(), user_id=caller.user_id, name=name, topic=topic, template=template,
        options=options, secret=new_secret(), created_at=now_rfc3339(),
    )  # fmt: skip
    return await svc.store.create_hook(hook)


# -- checking a sender --------------------------------------------------------------------


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


@dataclass(frozen=True)
class Credentials:
    """What a request presents: plain secrets (path, Bearer, X-Gitlab-Token) are checked
    before the body is read; signatures over the body after."""

    plain: tuple[str, ...]
    #: X-Hub-Signature-256 values ("sha256=<hex>", lower case)
    signatures: tuple[str, ...]
    #: X-Gitea-Signature values (bare hex, lower case)
    gitea_signatures: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.plain or self.signatures or self.gitea_signatures)


def credentials(path_secret: str | None, headers: Mapping[str, str]) -> Credentials:
    """The hook credentials of a request (header names in lower case)."""
    plain: list[str] = []
    if path_secret:
        plain.append(path_secret)
    auth = headers.get("authorization", "")
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        plain.append(value.strip())
    if headers.get("x-gitlab-token"):
        plain.append(headers["x-gitlab-token"].strip())
    hub = headers.get("x-hub-signature-256", "").strip()
    signatures = (hub.lower(),) if hub else ()
    gitea = headers.get("x-gitea-signature", "").strip()
    return Credentials(tuple(plain), signatures, (gitea.lower(),) if gitea else ())


def check_head(hook: Hook | None, creds: Credentials) -> Hook:
    """Check the credentials that need no body. Unauthorized for no credentials, an
    unknown hook or a wrong secret (the last two alike)."""
    if creds.empty:
        raise Unauthorized(
            "this hook needs its secret: in the URL (/v1/hooks/ID/SECRET), as "
            "'Authorization: Bearer SECRET', X-Gitlab-Token, or an X-Hub-Signature-256 / "
            "X-Gitea-Signature over the body"
        )
    expected = hook.secret if hook is not None else _DUMMY_SECRET
    ok = True
    for given in creds.plain:
        ok &= _same(given, expected)
    if hook is None or not ok:
        raise Unauthorized(BAD_CREDENTIALS)
    return hook


def check_signatures(hook: Hook, creds: Credentials, body: bytes) -> None:
    """Check the HMAC-SHA256 signatures over ``body`` (after :func:`check_head`)."""
    if not (creds.signatures or creds.gitea_signatures):
        return
    digest = hmac.new(hook.secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    ok = True
    for given in creds.signatures:
        ok &= _same(given, "sha256=" + digest)
    for given in creds.gitea_signatures:
        ok &= _same(given, digest)
    if not ok:
        raise Unauthorized(BAD_CREDENTIALS + " (the signature does not match the body)")


# -- reading the body ---------------------------------------------------------------------


def check_depth(payload: Any) -> None:
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValidationFailed(
                f"payload: nested deeper than {MAX_DEPTH} levels", field="payload"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))


def _json(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON ({str(exc)[:120]})") from None


def parse_body(template: str, body: bytes, content_type: str | None) -> Any:
    """The payload a request body holds: JSON whatever the Content-Type says, or for
    a form-encoded body the ``payload`` field (GitHub, Gitea, Slack) or the fields
    themselves (Apprise). BadRequest for what cannot be read; ValidationFailed for a
    payload nested too deeply."""
    tpl = TEMPLATES[template]
    if not body.strip():
        raise BadRequest("the request has no body: send the sender's JSON")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded" and (tpl.form_payload or tpl.form_fields):
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form-encoded body cannot be read") from None
        form = dict(pairs)
        if tpl.form_payload:
            if "payload" not in form:
                raise BadRequest("a form-encoded body needs a 'payload' field holding the JSON")
            payload = _json(form["payload"], "the 'payload' field")
        else:
            payload = form
    else:
        payload = _json(body, "the body")
    check_depth(payload)
    return payload


# -- mapping --------------------------------------------------------------------------------


def render(template: str, options: Mapping[str, Any], topic: str, payload: Any,
           headers: Mapping[str, str]) -> Result:  # fmt: skip
    """``payload`` through ``template``: complete, validated event dicts on ``topic``
    (a json template may name another), the hook's defaults applied. Raises
    ValidationFailed naming what did not fit."""
    try:
        result = TEMPLATES[template].render(payload, headers, options)
    except PayloadError as exc:
        raise invalid(exc) from None
    except RecursionError:
        raise ValidationFailed("payload: nested too deeply", field="payload") from None
    for ev in result.events:
        ev.setdefault("topic", topic)
        if "priority" not in ev and options.get("priority") is not None:
            ev["priority"] = options["priority"]
        if "category" not in ev and options.get("category"):
            ev["category"] = options["category"]
        extra = options.get("tags") or []
        if extra:
            ev["tags"] = list(dict.fromkeys([*ev.get("tags", []), *extra]))[:MAX_TAGS]
    if result.events:
        validate_events(result.events)  # the same 422s as POST /v1/events
    return result


async def render_async(template: str, options: Mapping[str, Any], topic: str, payload: Any,
                       headers: Mapping[str, str]) -> Result:  # fmt: skip
    """:func:`render` in a worker thread, a few at a time: a large payload (thousands
    of alerts) or a json template's budget does not hold the event loop."""
    global _RENDER_LIMITER
    if _RENDER_LIMITER is None:
        _RENDER_LIMITER = trio.CapacityLimiter(2)
    return await trio.to_thread.run_sync(
        lambda: render(template, options, topic, payload, headers), limiter=_RENDER_LIMITER
    )


def cap_batch(events: list[dict[str, Any]], limit: int, topic: str) -> list[dict[str, Any]]:
    """At most ``limit`` events: past it, the first ``limit - 1`` and one saying how
    many more there were (a sender retrying a refused batch forever helps nobody)."""
    if len(events) <= limit:
        return events
    kept = events[: max(limit - 1, 0)]
    more = len(events) - len(kept)
    kept.append({"topic": topic, "title": f"{more} more notifications",
                 "body": f"The sender posted {len(events)} at once; {more} were not kept."})  # fmt: skip
    return kept


async def publish(svc: Services, principal: Principal, result: Result,
                  topic: str) -> PublishResult | None:  # fmt: skip
    """Publish ``result``'s events as ``principal`` (one atomic batch), or nothing."""
    if not result.events:
        return None
    limit = svc.config.max_batch_events
    if svc.config.publish_rate > 0 and not principal.is_admin:  # a batch over the burst is 413
        limit = min(limit, svc.config.publish_burst)
    events = cap_batch(result.events, max(limit, 1), topic)
    return await inbox.publish(svc, principal, events)


async def deliver(svc: Services, hook: Hook, payload: Any,
                  headers: Mapping[str, str]) -> tuple[PublishResult | None, Result]:  # fmt: skip
    """Map ``payload`` with ``hook``'s template and publish as its owner (403 when the
    owner may not publish to a topic); records the use."""
    result = await render_async(hook.template, hook.options, hook.topic, payload, headers)
    owner = await _owner(svc, hook.user_id)
    published = await publish(svc, owner, result, hook.topic)
    try:
        await svc.store.touch_hook(hook.id, now_rfc3339())
    except NotifydError:
        pass  # the hook went meanwhile: the events are stored all the same
    return published, result


def sample(template: str) -> tuple[Any, dict[str, str]]:
    """The built-in sample request of ``template`` (for ``test`` without a payload)."""
    return TEMPLATES[template].sample()

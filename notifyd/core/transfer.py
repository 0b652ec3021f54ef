"""Export and import of a notifyd installation: the JSON Lines format.

An export is UTF-8 JSON Lines. Line 1 is a header::

    {"type": "header", "format": "notifyd-export", "version": 2,
     "exported_at": "2026-01-02T03:04:05.678Z",
     "source": {"notifyd": "0.1.0", "host": "box", "last_event_id": 1234,
                "engine": "sqlite"},
     "filters": {"topic": null, "since": null},
     "parts": ["accounts", "events"],
     "counts": {"events": 1200, "users": 2,
                "accounts": {"user": 3, "token": 5, "grant": 4, "channel": 2,
                             "preferences": 1, "vapid_key": 1}},
     "users": [{"name": "alice", "role": "user"}, ...]}

With accounts (version 2, ``parts`` holds ``"accounts"``), the installation
follows the header, one record per line, in this order (users are named, never
numbered: ids change between databases)::

    {"type": "user", "name", "role", "password_hash", "tz", "created_at"}
    {"type": "token", "user", "hash", "prefix", "label", "scopes", "topics",
     "created_at", "last_used_at", "expires_at"}
    {"type": "grant", "user", "pattern", "read", "write", "created_at"}
    {"type": "channel", "user", "name", "kind", "config", "enabled", "created_at"}
    {"type": "preferences", "user", "doc", "updated_at"}
    {"type": "hook", "user", "id", "name", "topic", "template", "options", "secret",
     "created_at", "last_used_at"}
    {"type": "vapid_key", "pem", "public_key"}

Secrets move as stored: argon2 password hashes, the SHA-256 digests of tokens
(never a token), channel configs with their secrets, inbound webhooks with their id
and secret (so that senders keep their URL and signing secret), the Web Push
private key. The file is therefore secret.

Hook records are newer than version 2 itself: the header counts them
(``counts.accounts.hook``) only when there are some, so that the export of an
installation without hooks is still read by a notifyd that predates them; one
with hooks is refused whole by such a notifyd, at line 1 (its header announces a
record type that notifyd does not know), and nothing is imported. An export without accounts (events only) is written as
version 1, whose format has not changed, so that older notifyd read it.

Then one line per event, oldest first: the API's event object (``id`` … ``created_at``)
plus ``"type": "event"``, ``superseded`` (a newer event with the same collapse key
replaced it) and ``state``: ``{user name: {read, seen_at, read_at, archived_at,
clicked_at, action}}`` with only the keys that are set, for users whose state is not
plain unread. A user's "mark all read" watermark is written out as ``read: true``
on each event it covers and that user may read, because ids change on import.

Importing validates every line before anything is written (a bad line fails the
whole import, naming its line number), then writes the accounts in one
transaction (a record whose key the target holds is left as it is: see
:meth:`~notifyd.core.store.OperationsStore.import_accounts`), installs the Web
Push key (see :class:`Importer`), and writes the events in transactions of
:data:`BATCH` events, so that publishers never wait long for the writer. Events
get new ids at the end of the stream, in file order; ``created_at`` and every
other field are kept; no deliveries are created. An event is skipped when the
target already holds it: the same (created_at, topic, title, body) — counted, so
that identical events published together all come through once. That makes a
re-import a no-op and an interrupted import resumable: run it again.

This module is the format and the rules; SQL lives behind the store.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import tempfile
import time
import zoneinfo
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import __version__
from .accounts import NAME_RE, Accounts, parse_scopes
from .errors import Conflict, NotifydError, StoreUnavailable, ValidationFailed
from .hooktemplates import TEMPLATE_NAMES, check_name, check_options
from .models import SLUG_RE, check_pattern, check_topic, validate_events
from .prefs import Preferences
from .store import (
    ACCOUNT_RECORDS,
    AccountsImport,
    Event,
    EventExport,
    ImportItem,
    Store,
)
from .timeutil import format_ts, normalize_rfc3339, now_rfc3339

FORMAT = "notifyd-export"
#: the newest format version this notifyd writes and reads (1: events only;
#: 2: the installation part, ``parts`` and per-record counts in the header)
VERSION = 2
#: what an events-only export is written as (unchanged since version 1)
EVENTS_ONLY_VERSION = 1
#: the Web Push private key in the data directory (plugins/webpush/vapid.py)
VAPID_KEY_FILE = "vapid_private.pem"
#: the record types an account import writes, in file order (users first: the
#: others name theirs)
ACCOUNT_KINDS = ACCOUNT_RECORDS
#: the record types of the installation part, in file order
INSTALLATION_RECORDS = (*ACCOUNT_KINDS, "vapid_key")
#: record types the header counts only when the file holds some (newer than
#: version 2: a file without them stays readable by the notifyd that predates them)
_COUNTED_IF_ANY = ("hook",)
#: at most this many installation records, and bytes of them, per import (they
#: are written in one transaction, so they are held in memory)
MAX_ACCOUNT_RECORDS = 200_000
MAX_ACCOUNT_BYTES = 256 * 1024 * 1024
#: events per write transaction on import, and per page on export
BATCH = 500
MAX_LINE = 1024 * 1024
STATE_KEYS = ("read", "seen_at", "read_at", "archived_at", "clicked_at", "action")
_TIME_KEYS = ("seen_at", "read_at", "archived_at", "clicked_at")
_EVENT_META = ("type", "id", "created_at", "superseded", "state")
_dumps = orjson.dumps


# --- export -------------------------------------------------------------------


def header(
    export: EventExport,
    topic: str | None,
    since: int | None,
    accounts: dict[str, int] | None = None,
    engine: str = "",
) -> dict[str, Any]:
    """The header line; ``accounts``: the installation records that follow, per
    type (None: events only, a version 1 file)."""
    s = export.summary
    counts: dict[str, Any] = {"events": s.events, "users": len(s.users)}
    source = {
        "notifyd": __version__,
        "host": socket.gethostname(),
        "last_event_id": s.last_event_id,
    }
    if engine:
        source["engine"] = engine
    head: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "version": EVENTS_ONLY_VERSION if accounts is None else VERSION,
        "exported_at": now_rfc3339(),
        "source": source,
        "filters": {"topic": topic, "since": since},
    }
    if accounts is not None:
        head["parts"] = ["accounts", "events"]
        counts["accounts"] = accounts
    head["counts"] = counts
    head["users"] = [{"name": name, "role": role} for name, role in s.users]
    return head


def event_record(event: Event) -> dict[str, Any]:
    return {"type": "event", **event}


def read_vapid_key(data_dir: str | Path) -> str | None:
    """The Web Push private key (PEM) kept in ``data_dir``, or None without one."""
    try:
        return (Path(data_dir) / VAPID_KEY_FILE).read_text("ascii")
    except FileNotFoundError:
        return None


async def export_lines(
    store: Store,
    topic: str | None,
    since: int | None,
    *,
    accounts: bool = False,
    vapid_pem: str | None = None,
) -> AsyncGenerator[bytes, None]:
    """The export as chunks of JSON Lines (one chunk per page of events), read from
    one snapshot of the store. Memory stays constant whatever the number of events.

    ``accounts``: also the installation (version 2): the records of
    :meth:`EventExport.account_records` and, when given, the Web Push key."""
    export = await store.open_export(topic, since)
    try:
        if not accounts:
            yield _dumps(header(export, topic, since, engine=store.engine)) + b"\n"
        else:
            records = await export.account_records()
            if vapid_pem is not None:
                records.append(vapid_record(vapid_pem))
            counts = dict.fromkeys(INSTALLATION_RECORDS, 0)
            for r in records:
                counts[r["type"]] += 1
            for kind in _COUNTED_IF_ANY:
                if not counts[kind]:
                    del counts[kind]
            yield _dumps(header(export, topic, since, counts, store.engine)) + b"\n"
            yield b"".join(_dumps(r) + b"\n" for r in records)
        while page := await export.next_page(BATCH):
            yield b"".join(_dumps(event_record(ev)) + b"\n" for ev in page)
    finally:
        with trio.CancelScope(shield=True):
            await export.aclose()


def _public_key(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _load_vapid(pem: str) -> ec.EllipticCurvePrivateKey:
    """Raises ValueError unless ``pem`` holds an unencrypted P-256 private key."""
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 (secp256r1) private key")
    return key


def vapid_record(pem: str) -> dict[str, Any]:
    return {"type": "vapid_key", "pem": pem, "public_key": _public_key(_load_vapid(pem))}


# --- validation -----------------------------------------------------------------


def _bad(line: int, message: str, field: str | None = None) -> ValidationFailed:
    return ValidationFailed(f"line {line}: {message}", field=field)


def _time(line: int, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _bad(line, f"{name}: expected an RFC 3339 timestamp", name)
    try:
        return normalize_rfc3339(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise _bad(line, f"{name}: not an RFC 3339 timestamp ({exc})", name) from None


def parse_header(line: int, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("type") != "header":
        raise _bad(line, 'expected the header line ({"type": "header", ...}) first', "type")
    if obj.get("format") != FORMAT:
        raise _bad(line, f"format is {obj.get('format')!r}, expected {FORMAT!r}", "format")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(line, "version: expected a positive integer", "version")
    if version > VERSION:
        raise _bad(
            line,
            f"the file is format version {version}, this notifyd reads version {VERSION}: "
            "upgrade notifyd here",
            "version",
        )
    counts = obj.get("counts")
    if counts is not None and (
        not isinstance(counts, dict) or not isinstance(counts.get("events", 0), int)
    ):
        raise _bad(line, 'counts: expected {"events": N, ...}', "counts")
    if version >= 2:
        # the installation part must be whole: its counts are announced up front
        parts = obj.get("parts")
        if not isinstance(parts, list) or not set(parts) <= {"accounts", "events"}:
            raise _bad(
                line, 'parts: a version 2 file lists its parts ("accounts", "events")', "parts"
            )
        announced = (counts or {}).get("accounts") if "accounts" in parts else {}
        if (
            not isinstance(counts, dict)
            or not isinstance(counts.get("events"), int)
            or not isinstance(announced, dict)
            or not set(announced) <= set(INSTALLATION_RECORDS)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in announced.values())
        ):  # fmt: skip
            raise _bad(
                line,
                'counts: a version 2 file announces its counts ({"events": N, "accounts": '
                '{"user": N, ...}} with accounts)',
                "counts",
            )
    users = obj.get("users") or []
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and isinstance(u.get("name"), str) for u in users
    ):
        raise _bad(line, 'users: expected a list of {"name": ..., "role": ...}', "users")
    return obj


_ARGON2 = re.compile(r"\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[A-Za-z0-9_\-]{0,32}")
#: the fields of each installation record (besides "type"); those in _REQUIRED must be there
_FIELDS = {
    "user": ("name", "role", "password_hash", "tz", "created_at"),
    "token": ("user", "hash", "prefix", "label", "scopes", "topics", "created_at",
              "last_used_at", "expires_at"),
    "grant": ("user", "pattern", "read", "write", "created_at"),
    "channel": ("user", "name", "kind", "config", "enabled", "created_at"),
    "preferences": ("user", "doc", "updated_at"),
    "hook": ("user", "id", "name", "topic", "template", "options", "secret", "created_at",
             "last_used_at"),
    "vapid_key": ("pem", "public_key"),
}  # fmt: skip
_REQUIRED = {
    "user": ("name", "role"),
    "token": ("user", "hash", "scopes"),
    "grant": ("user", "pattern", "read", "write"),
    "channel": ("user", "name", "kind", "config"),
    "preferences": ("user", "doc"),
    "hook": ("user", "id", "name", "topic", "template", "options", "secret"),
    "vapid_key": ("pem",),
}
_HOOK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_HOOK_SECRET_MAX = 256
#: what a hook's options hold
_HOOK_OPTIONS = ("priority", "category", "tags", "fields")
#: a channel kind's ``validate`` (``Channel.validate``): the kinds this daemon knows
ChannelKinds = Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]


def _str(line: int, obj: dict[str, Any], key: str, limit: int, *, null: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and null:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _bad(line, f"{key}: expected a string of at most {limit} characters", key)
    return value


def _opt_time(line: int, obj: dict[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _time(line, obj[key], key)


def _bool(line: int, obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _bad(line, f"{key}: expected true or false", key)
    return value


def _user_name(line: int, obj: dict[str, Any], key: str) -> str:
    name = obj.get(key)
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _bad(line, f"{key}: {name!r} is not a valid user name", key)
    return name


def _pattern(line: int, obj: dict[str, Any], key: str) -> str:
    try:
        return check_pattern(obj.get(key), stored=True)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _bad(line, f"{key}: {exc}", key) from None


def parse_account_record(line: int, obj: dict[str, Any], kinds: ChannelKinds) -> dict[str, Any]:
    """Validate one installation record (a ``user``, ``token``, … line) into what
    :meth:`~notifyd.core.store.OperationsStore.import_accounts` writes. ``kinds``:
    the channel kinds known here, with their config validators."""
    kind = obj["type"]
    unknown = set(obj) - {"type", *_FIELDS[kind]}
    if unknown:
        key = sorted(unknown)[0]
        raise _bad(line, f"{key}: unknown field of a {kind} record", key)
    for key in _REQUIRED[kind]:
        if obj.get(key) is None:
            raise _bad(line, f"{key}: this field of a {kind} record is required", key)
    out: dict[str, Any] = {"type": kind}
    if kind == "user":
        out["name"] = _user_name(line, obj, "name")
        if obj["role"] not in ("admin", "user"):
            raise _bad(line, 'role: expected "admin" or "user"', "role")
        out["role"] = obj["role"]
        pw = _str(line, obj, "password_hash", 512)
        if pw is not None and not _ARGON2.fullmatch(pw):
            raise _bad(
                line, "password_hash: expected an argon2 hash ($argon2id$…)", "password_hash"
            )
        out["password_hash"] = pw
        tz = _str(line, obj, "tz", 64) or "UTC"
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise _bad(line, f"tz: {tz!r} is not a known time zone", "tz") from None
        out["tz"] = tz
        out["created_at"] = _opt_time(line, obj, "created_at") or now_rfc3339()
    elif kind == "token":
        out["user"] = _user_name(line, obj, "user")
        digest = obj["hash"]
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise _bad(line, "hash: expected the token's SHA-256 (64 lowercase hex digits)", "hash")
        out["hash"] = digest
        prefix = _str(line, obj, "prefix", 32)
        if prefix is not None and not _PREFIX.fullmatch(prefix):
            raise _bad(line, "prefix: expected the token's first characters (nfy_…)", "prefix")
        out["prefix"] = prefix
        out["label"] = _str(line, obj, "label", 64)
        scopes = obj["scopes"]
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            raise _bad(line, "scopes: expected a list of scope names", "scopes")
        try:
            out["scopes"] = list(parse_scopes(scopes))
        except ValidationFailed as exc:
            raise _bad(line, exc.message, "scopes") from None
        out["topics"] = None if obj.get("topics") is None else _pattern(line, obj, "topics")
        out["created_at"] = _opt_time(line, obj, "created_at") or now_rfc3339()
        out["last_used_at"] = _opt_time(line, obj, "last_used_at")
        out["expires_at"] = _opt_time(line, obj, "expires_at")
    elif kind == "grant":
        out["user"] = _user_name(line, obj, "user")
        out["pattern"] = _pattern(line, obj, "pattern")
        out["read"] = _bool(line, obj, "read")
        out["write"] = _bool(line, obj, "write")
        out["created_at"] = _opt_time(line, obj, "created_at") or now_rfc3339()
    elif kind == "channel":
        out["user"] = _user_name(line, obj, "user")
        name = obj["name"]
        if not isinstance(name, str) or not SLUG_RE.fullmatch(name):
            raise _bad(line, "name: channel names are slugs: a–z, 0–9, '-' and '_'", "name")
        out["name"] = name
        ch_kind = obj["kind"]
        validate = kinds.get(ch_kind) if isinstance(ch_kind, str) else None
        if validate is None:
            known = ", ".join(sorted(kinds)) or "none"
            raise _bad(
                line,
                f"kind: channel kind {str(ch_kind)[:64]!r} is not available here (available: "
                f"{known}); install its plugin first",
                "kind",
            )
        out["kind"] = ch_kind
        config = obj["config"]
        if not isinstance(config, dict):
            raise _bad(line, "config: expected an object", "config")
        try:
            out["config"] = validate(dict(config))
        except ValueError as exc:  # the kind's own message (never a secret)
            raise _bad(line, f"config: {exc}", "config") from None
        enabled = obj.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _bad(line, "enabled: expected true or false", "enabled")
        out["enabled"] = enabled
        out["created_at"] = _opt_time(line, obj, "created_at") or now_rfc3339()
    elif kind == "preferences":
        out["user"] = _user_name(line, obj, "user")
        doc = obj["doc"]
        if not isinstance(doc, dict):
            raise _bad(line, "doc: expected an object", "doc")
        try:
            out["doc"] = Preferences.from_json(doc).to_json()
        except ValueError as exc:
            raise _bad(line, f"doc.{exc}", "doc") from None
        out["updated_at"] = _opt_time(line, obj, "updated_at") or now_rfc3339()
    elif kind == "hook":
        out.update(_hook_record(line, obj))
    else:  # vapid_key
        pem = _str(line, obj, "pem", 4096, null=False)
        assert pem is not None
        try:
            private = _load_vapid(pem)
        except ValueError as exc:
            raise _bad(line, f"pem: {exc}", "pem") from None
        out["pem"] = pem
        out["public_key"] = _public_key(private)
        if obj.get("public_key") is not None and obj["public_key"] != out["public_key"]:
            raise _bad(line, "public_key: does not belong to the private key in pem", "public_key")
    return out


def check_hook_options(template: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A known template's options (``priority``, ``category``, ``tags``, ``fields``),
    checked and normalised as a new hook's are; ValidationFailed names
    ``options.<field>``."""
    try:
        return check_options(
            template, options.get("priority"), options.get("category"), options.get("tags"),
            options.get("fields"),
        )  # fmt: skip
    except ValidationFailed as exc:
        where = exc.field or "options"
        text = exc.message.removeprefix(f"{where}: ")
        raise ValidationFailed(f"options.{where}: {text}", field=f"options.{where}") from None


def _hook_record(line: int, obj: dict[str, Any]) -> dict[str, Any]:
    """A hook record's fields, checked as :func:`notifyd.core.hooks.create` checks a
    new hook (the owner's write right on the topic is checked at each request). The
    id and the secret are never echoed: together they are the hook's URL."""
    out: dict[str, Any] = {"user": _user_name(line, obj, "user")}
    hook_id = obj["id"]
    if not isinstance(hook_id, str) or not _HOOK_ID.fullmatch(hook_id):
        raise _bad(line, "id: expected 1–64 characters of A–Z, a–z, 0–9", "id")
    out["id"] = hook_id
    try:
        out["name"] = check_name(obj["name"])  # the rules of a new hook (core/hooktemplates)
    except ValidationFailed as exc:
        raise _bad(line, exc.message, exc.field) from None
    try:
        out["topic"] = check_topic(obj["topic"])
    except ValueError as exc:
        raise _bad(line, f"topic: {exc}", "topic") from None
    template = obj["template"]
    if template not in TEMPLATE_NAMES:
        raise _bad(line, f"template: one of {', '.join(TEMPLATE_NAMES)}", "template")
    out["template"] = template
    options = obj["options"]
    if not isinstance(options, dict):
        raise _bad(line, "options: expected an object", "options")
    unknown = sorted(set(options) - set(_HOOK_OPTIONS))
    if unknown:
        raise _bad(line, f"options.{unknown[0]}: unknown option of a hook", f"options.{unknown[0]}")
    try:
        out["options"] = check_hook_options(template, options)
    except ValidationFailed as exc:
        raise _bad(line, exc.message, exc.field) from None
    secret = obj["secret"]
    if not isinstance(secret, str) or not 0 < len(secret) <= _HOOK_SECRET_MAX:
        raise _bad(line, f"secret: expected a string of 1–{_HOOK_SECRET_MAX} characters", "secret")
    out["secret"] = secret
    out["created_at"] = _opt_time(line, obj, "created_at") or now_rfc3339()
    out["last_used_at"] = _opt_time(line, obj, "last_used_at")
    return out


def record_key(record: dict[str, Any]) -> str:
    """What identifies an installation record on the target: ``"<type> <key>"``
    (a token by its digest's first 12 digits: never the whole digest in a report)."""
    kind = record["type"]
    if kind == "user":
        return f"user {record['name']}"
    if kind == "token":
        return f"token {record['user']}/{record['hash'][:12]}"
    if kind == "grant":
        return f"grant {record['user']} {record['pattern']}"
    if kind == "channel":
        return f"channel {record['user']}/{record['name']}"
    if kind == "preferences":
        return f"preferences {record['user']}"
    if kind == "hook":  # by name: the id is half of the hook's URL
        return f"hook {record['user']}/{record['name']}"
    return "vapid_key"


def _identity(record: dict[str, Any]) -> tuple[str, ...]:
    """The key under which a target holds a record (tokens: their digest, whoever owns them)."""
    kind = record["type"]
    if kind == "user":
        return (kind, record["name"])
    if kind == "token":
        return (kind, record["hash"])
    if kind == "grant":
        return (kind, record["user"], record["pattern"])
    if kind == "channel":
        return (kind, record["user"], record["name"])
    if kind == "preferences":
        return (kind, record["user"])
    if kind == "hook":
        return (kind, record["id"])
    return (kind,)


#: what must be equal for a record held by the target to count as the same
_COMPARED = {
    "user": ("role", "password_hash"),
    "token": ("user", "label", "topics", "expires_at"),
    "grant": ("read", "write"),
    "channel": ("kind", "config", "enabled"),
    "preferences": ("doc",),
    "hook": ("user", "name", "topic", "template", "options", "secret"),
}


@dataclass
class AccountPlan:
    """What :func:`plan_accounts` decided: the records to insert, per type, and the
    passwords to set (``(user name, hash)``) on users that have none."""

    insert: dict[str, list[dict[str, Any]]]
    passwords: list[tuple[str, str]]
    result: AccountsImport


def plan_accounts(existing: list[dict[str, Any]], incoming: list[dict[str, Any]]) -> AccountPlan:
    """The rules of an account import, the same for every engine: ``existing`` is
    what the target holds (read in the import's transaction, in the records' shape),
    ``incoming`` the file's validated records. A record whose key the target holds
    is left alone: ``present`` when equal, else ``kept`` (the target's wins); a user
    that has no password gets the file's (counted in ``added["password"]``). A hook
    is keyed by its id; a new id whose user has a hook of that name already (names
    are unique per user) is ``kept`` too: the target's hook stays, the file's is not
    added."""
    held = {_identity(r): r for r in existing}
    hook_names = {(r["user"], r["name"]) for r in existing if r["type"] == "hook"}
    result = AccountsImport(
        added={k: 0 for k in (*ACCOUNT_KINDS, "password")},
        present=dict.fromkeys(ACCOUNT_KINDS, 0),
    )
    plan = AccountPlan({k: [] for k in ACCOUNT_KINDS}, [], result)
    for record in incoming:
        kind = record["type"]
        if kind not in ACCOUNT_KINDS:
            continue
        old = held.get(_identity(record))
        if old is None:
            if kind == "hook":
                if (record["user"], record["name"]) in hook_names:
                    result.kept.append(record_key(record))
                    continue
                hook_names.add((record["user"], record["name"]))
            plan.insert[kind].append(record)
            result.added[kind] += 1
            continue
        same = all(old.get(k) == record.get(k) for k in _COMPARED[kind])
        if kind == "token":
            same = same and set(old["scopes"]) == set(record["scopes"])
        if (
            kind == "user"
            and old["password_hash"] is None
            and record["password_hash"]
            and old["role"] == record["role"]
        ):
            plan.passwords.append((record["name"], record["password_hash"]))
            result.added["password"] += 1
            continue
        if same:
            result.present[kind] += 1
        else:
            result.kept.append(record_key(record))
    return plan


def parse_state(line: int, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise _bad(line, "state: expected an object {user name: {read, seen_at, ...}}", "state")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        where = f"state.{name}"
        if not NAME_RE.fullmatch(name):
            raise _bad(line, f"{where}: {name!r} is not a valid user name", where)
        if not isinstance(entry, dict):
            raise _bad(line, f"{where}: expected an object", where)
        unknown = set(entry) - set(STATE_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise _bad(line, f"{where}: unknown field {key!r}", f"{where}.{key}")
        clean: dict[str, Any] = {}
        read = entry.get("read")
        if read is not None:
            if not isinstance(read, bool):
                raise _bad(line, f"{where}.read: expected true or false", f"{where}.read")
            clean["read"] = read
        for key in _TIME_KEYS:
            if entry.get(key) is not None:
                clean[key] = _time(line, entry[key], f"{where}.{key}")
        action = entry.get("action")
        if action is not None:
            if not isinstance(action, str) or len(action) > 256:
                raise _bad(line, f"{where}.action: expected a string", f"{where}.action")
            clean["action"] = action
        if clean:
            out[name] = clean
    return out


def parse_event(line: int, obj: Any) -> ImportItem:
    """Validate one event line into what the store imports. Raises ValidationFailed
    whose message starts with ``line N:``."""
    if not isinstance(obj, dict):
        raise _bad(line, "expected a JSON object")
    kind = obj.get("type")
    if kind != "event":
        what = "a second header" if kind == "header" else f"type {kind!r}"
        raise _bad(line, f'{what}: expected an event ({{"type": "event", ...}})', "type")
    if "created_at" not in obj:
        raise _bad(line, "created_at: this field is required", "created_at")
    created_at = _time(line, obj["created_at"], "created_at")
    source_id = obj.get("id")
    if source_id is not None and (not isinstance(source_id, int) or isinstance(source_id, bool)):
        raise _bad(line, "id: expected an integer (the event's id at the source)", "id")
    superseded = obj.get("superseded", False)
    if not isinstance(superseded, bool):
        raise _bad(line, "superseded: expected true or false", "superseded")
    state = parse_state(line, obj.get("state") or {})
    fields = {k: v for k, v in obj.items() if k not in _EVENT_META}
    try:
        (ev,), _ = validate_events(fields)
    except NotifydError as exc:
        raise _bad(line, exc.message, exc.field) from None
    event = ev.model_dump(exclude={"actions"})
    event["actions"] = [a.model_dump(exclude_none=True) for a in ev.actions]
    return ImportItem(event=event, created_at=created_at, superseded=superseded, state=state)


# --- import -------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do); ``--json`` prints it."""

    format_version: int = VERSION
    source: dict[str, Any] = field(default_factory=dict)
    #: events in the file
    events: int = 0
    imported: int = 0
    #: already on this daemon (same created_at, topic, title, body)
    skipped: int = 0
    first_id: int | None = None
    last_id: int | None = None
    #: per-user state entries written
    states: int = 0
    #: users named in the file that do not exist here: their state was not imported
    users_missing: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    states_skipped: int = 0
    #: events that the retention or their expires_at will remove soon
    older_than_retention: int = 0
    expired: int = 0
    dry_run: bool = False
    #: what the file holds: ["events"], or ["accounts", "events"]
    parts: list[str] = field(default_factory=lambda: ["events"])
    #: installation records in the file, per type
    records: dict[str, int] = field(default_factory=dict)
    #: what the account import did: {"added": {type: n, "password": n}, "present":
    #: {type: n}, "kept": ["<type> <key>", …]} (None without an accounts part)
    accounts: dict[str, Any] | None = None
    #: the Web Push key of the file: None (the file has none), "installed" (this
    #: daemon had none, or one no subscription used), "present" (the same key),
    #: "replaced" (replace_vapid_key), "not written" (no data directory given)
    vapid_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Parser:
    """Phase 1, in a worker thread: split the body into lines, validate each, and
    spool the validated records to a temporary file (constant memory)."""

    def __init__(
        self,
        spool: IO[bytes],
        now: float,
        retention_days: int | None,
        kinds: ChannelKinds | None = None,
    ) -> None:
        self.spool = spool
        self.line = 0
        self.buf = b""
        self.header: dict[str, Any] | None = None
        self.events = 0
        #: the installation part (version 2 with accounts), validated, in file order
        self.records: list[dict[str, Any]] = []
        self.record_counts = dict.fromkeys(INSTALLATION_RECORDS, 0)
        self._kinds: ChannelKinds = kinds or {}
        self._accounts = False  # the header announces the installation part
        self._seen: set[tuple[str, ...]] = set()
        self._file_users: set[str] = set()
        self._record_bytes = 0
        self.user_entries: dict[str, int] = {}
        self.expired = 0
        self.old = 0
        self._now = format_ts(now)
        self._retention = format_ts(now - retention_days * 86400) if retention_days else None
        self._run_at: str | None = None
        self._run: dict[tuple[str, str, str], int] = {}

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self._line(raw)
        if len(self.buf) > MAX_LINE:
            raise _bad(self.line + 1, f"longer than {MAX_LINE // 1024} KiB: is this JSON Lines?")

    def finish(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = b""
        if self.header is None:
            raise _bad(1, "the file is empty: expected a notifyd export (a header line first)")
        counts = self.header.get("counts") or {}
        announced = counts.get("events")
        if announced is not None and announced != self.events:
            raise _bad(
                self.line,
                f"the file ends after {self.events} events but its header announces {announced}: "
                "it is incomplete (was the export interrupted?)",
            )
        for kind, n in (counts.get("accounts") or {}).items():
            if self._accounts and n != self.record_counts[kind]:
                raise _bad(
                    self.line,
                    f"the file holds {self.record_counts[kind]} {kind} records but its header "
                    f"announces {n}: it is incomplete or was edited",
                )
        self.spool.flush()

    def _record(self, obj: dict[str, Any]) -> None:
        """One installation record (before the events, in a version 2 file)."""
        kind = obj["type"]
        if not self._accounts:
            raise _bad(
                self.line,
                f"a {kind} record, but the header announces no accounts part "
                '(version 2 with "parts": ["accounts", ...])',
                "type",
            )
        if self.events:
            raise _bad(self.line, f"a {kind} record after the events: they come first", "type")
        record = parse_account_record(self.line, obj, self._kinds)
        ident = _identity(record)
        if ident in self._seen:
            if kind == "hook":
                raise _bad(self.line, f"{record_key(record)}: an earlier hook has its id", "id")
            raise _bad(self.line, f"{record_key(record)} appears twice in the file")
        self._seen.add(ident)
        if kind == "hook":  # names are unique per user, ids everywhere
            named = ("hook name", record["user"], record["name"])
            if named in self._seen:
                raise _bad(self.line, f"{record_key(record)} appears twice in the file", "name")
            self._seen.add(named)
        if kind == "user":
            self._file_users.add(record["name"])
        elif "user" in record and record["user"] not in self._file_users:
            raise _bad(
                self.line,
                f"user: {record['user']!r} is not among the users listed before this line",
                "user",
            )
        self.record_counts[kind] += 1
        if len(self.records) >= MAX_ACCOUNT_RECORDS or self._record_bytes > MAX_ACCOUNT_BYTES:
            raise _bad(self.line, f"more than {MAX_ACCOUNT_RECORDS} installation records")
        self.records.append(record)

    def _line(self, raw: bytes) -> None:
        self.line += 1
        if len(raw) > MAX_LINE:
            raise _bad(self.line, f"longer than {MAX_LINE // 1024} KiB")
        if not raw.strip():
            return
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad(self.line, f"not valid JSON ({exc})") from None
        if self.header is None:
            self.header = parse_header(self.line, obj)
            self._accounts = self.header["version"] >= 2 and "accounts" in (
                self.header.get("parts") or ()
            )
            return
        if isinstance(obj, dict) and obj.get("type") in INSTALLATION_RECORDS:
            self._record_bytes += len(raw)
            self._record(obj)
            return
        item = parse_event(self.line, obj)
        self.events += 1
        for name in item.state:
            self.user_entries[name] = self.user_entries.get(name, 0) + 1
        exp = item.event.get("expires_at")
        if exp is not None and exp <= self._now:
            self.expired += 1
        elif self._retention is not None and item.created_at < self._retention:
            self.old += 1
        # identical events share created_at (one publish): count them within the run
        if item.created_at != self._run_at:
            self._run_at, self._run = item.created_at, {}
        key = (item.event["topic"], item.event["title"], item.event["body"])
        item.occurrence = self._run[key] = self._run.get(key, 0) + 1
        record = {"e": item.event, "c": item.created_at, "s": item.superseded,
                  "st": item.state, "o": item.occurrence}  # fmt: skip
        self.spool.write(_dumps(record) + b"\n")


class VapidKeyConflict(Conflict):
    """The file's Web Push key differs from this daemon's, which subscriptions use."""

    code = "vapid_key_conflict"


def install_vapid_key(data_dir: str | Path, pem: str) -> None:
    """Write ``pem`` as the Web Push private key of ``data_dir`` (mode 0600, never
    wider): a temporary file, synced, then renamed over the old key, so that a
    crash leaves the old key or the new one, whole. The webpush plugin notices the
    new file (its signer re-reads a changed key file)."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / VAPID_KEY_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{VAPID_KEY_FILE}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_batch(spool: IO[bytes], n: int) -> list[ImportItem]:
    items = []
    for _ in range(n):
        raw = spool.readline()
        if not raw:
            break
        r = orjson.loads(raw)
        items.append(ImportItem(event=r["e"], created_at=r["c"], superseded=r["s"],
                                state=r["st"], occurrence=r["o"]))  # fmt: skip
    return items


class Importer:
    """Imports one export into the store: :meth:`read` validates the whole input
    (nothing is written if a line is bad), :meth:`apply` writes it in batches.

    Args:
        store, accounts: the daemon's.
        spool_dir: where validated records wait between the two phases (the data
            directory: the same disk as the database).
        publisher_id: recorded as the publisher of the imported events.
        create_users: create users named in the state that do not exist (role
            from the header's ``users``, else ``user``; no password).
        retention_days: to count the events the pruner will soon remove.
        kinds: the channel kinds this daemon knows, with their config validators
            (a channel of another kind fails the import).
        vapid_dir: the data directory whose Web Push key an imported key goes to
            (None: the key is validated but not written).
        replace_vapid_key: replace a different key even though subscriptions here
            use it (they stop working: those browsers must subscribe again).
    """

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        *,
        spool_dir: str | Path,
        publisher_id: int,
        create_users: bool = False,
        retention_days: int | None = None,
        kinds: ChannelKinds | None = None,
        vapid_dir: str | Path | None = None,
        replace_vapid_key: bool = False,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.publisher_id = publisher_id
        self.create_users = create_users
        self.vapid_dir = vapid_dir
        self.replace_vapid_key = replace_vapid_key
        fd, name = tempfile.mkstemp(prefix=".import-", suffix=".jsonl", dir=spool_dir)
        os.unlink(name)  # nothing to clean up after a crash
        self._spool = os.fdopen(fd, "w+b")
        self._parser = _Parser(self._spool, time.time(), retention_days, kinds)
        self.report = ImportReport()

    def close(self) -> None:
        self._spool.close()

    async def read(self, chunks: AsyncIterator[bytes], chunk_size: int = 256 * 1024) -> None:
        """Validate and spool the whole input. After a bad line the rest is read
        and dropped, so that the client gets the error rather than a broken pipe.

        Raises ValidationFailed naming the first bad line.
        """
        error: NotifydError | None = None
        pending: list[bytes] = []
        size = 0

        async def feed() -> None:
            nonlocal error, size
            data = b"".join(pending)
            pending.clear()
            size = 0
            if error is None:
                try:
                    await trio.to_thread.run_sync(self._parser.feed, data)
                except NotifydError as exc:
                    error = exc

        async for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= chunk_size:
                await feed()
        await feed()
        if error is None:
            await trio.to_thread.run_sync(self._parser.finish)
        if error is not None:
            raise error
        p = self._parser
        header = p.header or {}
        self.report.source = header.get("source") or {}
        self.report.format_version = header.get("version", 1)
        if self.report.format_version >= 2:
            self.report.parts = list(header.get("parts") or ["events"])
        if "accounts" in self.report.parts:
            self.report.records = dict(p.record_counts)
        self.report.events = p.events
        self.report.expired = p.expired
        self.report.older_than_retention = p.old

    async def _users(self) -> dict[str, int]:
        wanted = self._parser.user_entries
        users = {u.name: u.id for u in await self.store.list_users()}
        missing = sorted(set(wanted) - set(users))
        if missing and self.create_users:
            roles = {
                u["name"]: u.get("role") for u in (self._parser.header or {}).get("users") or []
            }
            for name in missing:
                role = "admin" if roles.get(name) == "admin" else "user"
                users[name] = (await self.accounts.create_user(name, role, None)).id
                self.report.users_created.append(name)
        else:
            self.report.users_missing = missing
            self.report.states_skipped = sum(wanted[n] for n in missing)
        return users

    async def _vapid_plan(self) -> tuple[str, str] | None:
        """What to do with the file's Web Push key: (action, pem), or None without one.

        Raises VapidKeyConflict (409) when this daemon has another key that
        subscriptions use (other than those of the file: an interrupted import of
        the same file), unless ``replace_vapid_key``."""
        record = next((r for r in self._parser.records if r["type"] == "vapid_key"), None)
        if record is None:
            return None
        pem = record["pem"]
        if self.vapid_dir is None:
            return "not written", pem
        current = await trio.to_thread.run_sync(read_vapid_key, self.vapid_dir)
        if current is None:
            return "installed", pem
        try:
            same = _public_key(_load_vapid(current)) == record["public_key"]
        except ValueError:
            same = False  # an unreadable key file: nothing can be signed with it
        if same:
            return "present", pem
        incoming = {(r["user"], r["name"]) for r in self._parser.records if r["type"] == "channel"}
        users = {u.id: u.name for u in await self.store.list_users()}
        subscribed = [
            ch
            for ch in await self.store.list_channels(kind="webpush")
            if (users.get(ch.user_id), ch.name) not in incoming
        ]
        if not subscribed:
            return "installed", pem
        if not self.replace_vapid_key:
            raise VapidKeyConflict(
                f"this daemon's Web Push (VAPID) key differs from the file's, and "
                f"{len(subscribed)} browser subscription(s) here use it: replacing it would "
                "stop their pushes. Nothing was imported. Import into a daemon without "
                "subscriptions, or pass --replace-vapid-key (replace_vapid_key=true) to "
                "replace the key anyway (those browsers must then subscribe again)",
                field="vapid_key",
            )
        return "replaced", pem

    async def check(self) -> ImportReport:
        """A dry run's report: what :meth:`apply` would do with the Web Push key
        (raises VapidKeyConflict as it would); nothing is written."""
        plan = await self._vapid_plan()
        self.report.vapid_key = None if plan is None else plan[0]
        self.report.dry_run = True
        return self.report

    async def apply(self, progress: Callable[[int], None] | None = None) -> ImportReport:
        """Write the validated installation (accounts in one transaction, then the
        Web Push key), then the events, :data:`BATCH` per transaction.

        Raises VapidKeyConflict before writing anything (see :meth:`_vapid_plan`);
        StoreUnavailable if a write fails: what earlier transactions wrote is
        stored, and running the same import again finishes the job.
        """
        report = self.report
        plan = await self._vapid_plan()
        accounts = [r for r in self._parser.records if r["type"] != "vapid_key"]
        if "accounts" in report.parts:
            written = await self.store.import_accounts(accounts)
            report.accounts = asdict(written)
        if plan is not None:
            action, pem = plan
            if action in ("installed", "replaced"):
                assert self.vapid_dir is not None
                await trio.to_thread.run_sync(install_vapid_key, self.vapid_dir, pem)
            report.vapid_key = action
        users = await self._users()
        before_id = await self.store.last_event_id()
        await trio.to_thread.run_sync(self._spool.seek, 0)
        done = 0
        while items := await trio.to_thread.run_sync(_read_batch, self._spool, BATCH):
            try:
                batch = await self.store.import_events(items, self.publisher_id, users, before_id)
            except NotifydError as exc:
                raise StoreUnavailable(
                    f"the import stopped after {done} of {report.events} events "
                    f"({report.imported} imported): {exc.message}; run the same import again "
                    "to finish it (events already imported are skipped)",
                    retry_after=exc.retry_after,
                ) from exc
            done += len(items)
            report.imported += len(batch.stored)
            report.skipped += batch.skipped
            report.states += batch.states
            if batch.stored:
                if report.first_id is None:
                    report.first_id = batch.stored[0]["id"]
                report.last_id = batch.stored[-1]["id"]
            if progress is not None:
                progress(done)
        return report

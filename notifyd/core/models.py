"""The event model: what a publisher may send, and how it is checked.

Validation lives here, in the core, so that every way into the daemon (HTTP,
the Unix socket, the ntfy/Gotify compatibility layers, imports) accepts exactly the
same events and rejects bad ones with the same error naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from .errors import BadRequest, ValidationFailed
from .priority import PRIORITY_NAMES
from .timeutil import normalize_rfc3339

TOPIC_SEGMENT = r"[A-Za-z0-9_.\-]{1,64}"
TOPIC_RE = re.compile(rf"^{TOPIC_SEGMENT}(?:/{TOPIC_SEGMENT})*$")
TOPIC_MAX = 255
#: A topic pattern is a topic whose segments may contain ``*`` (any run of characters, ``/`` included).
PATTERN_RE = re.compile(r"^[A-Za-z0-9_.\-*/]{1,255}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
COLLAPSE_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


TITLE_MAX = 256
BODY_MAX = 4096
URL_MAX = 2048
MAX_ACTIONS = 3
MAX_TAGS = 16


#: the largest id or counter a client may name (SQLite's INTEGER, a signed 64-bit value)
ID_MAX = 2**63 - 1


def ascii_int(text: str, max_value: int = ID_MAX) -> int | None:
    """``text`` as a whole number if it is 1–19 ASCII digits no larger than
    ``max_value``, else None. ``str.isdigit`` alone also takes '²' and other digits
    that ``int()`` refuses; the length bound keeps ``int()`` cheap and in range."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    n = int(text)
    return n if n <= max_value else None


def parse_priority(value: Any) -> int:
    """Accept 1–5 (int or digit string) or a name: min low default high urgent (max)."""
    if isinstance(value, bool):
        raise ValueError("priority must be 1–5 or one of min, low, default, high, urgent")
    if isinstance(value, int):
        p = value
    elif isinstance(value, str) and value.strip().isdigit():
        p = int(value.strip())
    elif isinstance(value, str) and value.strip().lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.strip().lower()]
    else:
        raise ValueError("priority must be 1–5 or one of min, low, default, high, urgent")
    if not 1 <= p <= 5:
        raise ValueError("priority must be between 1 (min) and 5 (urgent)")
    return p


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or len(topic) > TOPIC_MAX or not TOPIC_RE.fullmatch(topic):
        raise ValueError(
            "topic must be 1–64 characters of A–Z a–z 0–9 _ . - per segment, "
            "segments separated by '/'"
        )
    if any(seg in (".", "..") for seg in topic.split("/")):
        raise ValueError("topic segments cannot be '.' or '..'")
    return topic


#: Wildcards allowed in one pattern (a run of ``*`` counts as one). Real patterns use
#: one or two (``alerts/*``, ``*/errors``, ``host-*/cpu-*``); the cap keeps the work
#: of one match small and fixed wherever patterns are matched: our matcher
#: (:mod:`notifyd.core.globs`, one string search per piece) and SQLite's ``GLOB``,
#: which recurses once per ``*``.
PATTERN_MAX_WILDCARDS = 8
_STAR_RUN = re.compile(r"\*{2,}")  # one character class, no nesting: a linear scan


def check_pattern(pattern: str, *, stored: bool = False) -> str:
    """Check a topic pattern and return its normal form: runs of ``*`` collapsed to
    one (``a**b`` matches exactly what ``a*b`` matches). Store and use the returned
    value. Raises ``ValueError`` (callers answer 422).

    ``stored``: the pattern was accepted earlier and is being read back; it is
    normalised but not held to :data:`PATTERN_MAX_WILDCARDS`, which came later (the
    matcher is linear whatever the count, so an old pattern stays usable)."""
    if not isinstance(pattern, str) or not PATTERN_RE.fullmatch(pattern):
        raise ValueError("a topic pattern is a topic that may contain '*' wildcards")
    pattern = _STAR_RUN.sub("*", pattern)
    if not stored and pattern.count("*") > PATTERN_MAX_WILDCARDS:
        raise ValueError(
            f"a topic pattern may contain at most {PATTERN_MAX_WILDCARDS} '*' wildcards"
        )
    return pattern


def check_url(value: str) -> str:
    if len(value) > URL_MAX:
        raise ValueError(f"URL is longer than {URL_MAX} characters")
    lower = value.lower()
    if not (lower.startswith("https://") or lower.startswith("http://")) or len(value) < 10:
        raise ValueError("must be an absolute http:// or https:// URL")
    if any(c.isspace() for c in value):
        raise ValueError("URL cannot contain whitespace")
    return value


#: JSON Schema patterns for the OpenAPI document only (``json_schema_extra``): the
#: validators below do the checking, with messages that name what is wrong.
_URL_DOC = {"pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://\S{3,}$", "minLength": 10}
_PRIORITY_DOC: JsonDict = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 5},
        {"type": "string", "enum": ["1", "2", "3", "4", "5", *PRIORITY_NAMES]},
    ]
}

Url = Annotated[str, Field(max_length=URL_MAX, json_schema_extra=_URL_DOC)]


class Action(BaseModel):
    """A button on a notification: open ``url``, or send an HTTP ``method`` to it."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=40)
    url: Url
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"] | None = None

    _url = field_validator("url")(classmethod(lambda cls, v: check_url(v)))


#: an uploaded attachment's id: 12 characters of A–Z a–z 0–9
ATTACHMENT_ID_RE = re.compile(r"^[A-Za-z0-9]{12}$")
#: where notifyd serves an uploaded attachment (relative to the server)
ATTACHMENT_PATH = "/v1/attachments/"
NAME_MAX = 255
_NAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_filename(raw: str | None, fallback: str = "attachment") -> str:
    """A file name safe to store and show: the last path segment (``/`` and ``\\``),
    no control or bidirectional-override characters, no leading dots or spaces,
    NFC, at most :data:`NAME_MAX` characters (the extension kept); ``fallback``
    when nothing is left."""
    import unicodedata

    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _NAME_UNSAFE.sub("", name).strip().lstrip(". ").strip()
    if len(name) > NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: NAME_MAX - len(ext) - 1] + "." + ext
        else:
            name = name[:NAME_MAX]
    return name or fallback


def url_filename(url: str) -> str:
    """The last segment of ``url``'s path, decoded and cleaned."""
    from urllib.parse import unquote, urlsplit

    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return clean_filename(unquote(path.rsplit("/", 1)[-1]))


class AttachmentIn(BaseModel):
    """An event's attachment. A publisher sends ``{"id"}`` (a file it uploaded with
    ``POST /v1/attachments``) or ``{"url", "name"?}`` (a file elsewhere); the server
    fills in the rest (name, type, size, expires_at and url of an uploaded file)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, json_schema_extra={"pattern": ATTACHMENT_ID_RE.pattern})
    name: str | None = Field(default=None, max_length=1024)
    type: str | None = Field(default=None, max_length=127)
    size: int | None = Field(default=None, ge=0)
    expires_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    url: Url | None = None

    @model_validator(mode="after")
    def _check(self) -> AttachmentIn:
        if self.id is not None:
            if not ATTACHMENT_ID_RE.fullmatch(self.id):
                raise ValueError("id: not an attachment id (12 letters and digits)")
            if self.url is not None and self.url != ATTACHMENT_PATH + self.id:
                raise ValueError("url: give either an uploaded file's id or a URL, not both")
            self.url = ATTACHMENT_PATH + self.id
        elif self.url is None:
            raise ValueError("id: give the id of an uploaded file, or a url")
        else:
            try:
                check_url(self.url)
            except ValueError as exc:
                raise ValueError(f"url: {exc}") from None
            self.expires_at = None
        if self.expires_at is not None:
            try:
                self.expires_at = normalize_rfc3339(self.expires_at)
            except (ValueError, OverflowError, OSError) as exc:
                raise ValueError(f"expires_at: not an RFC 3339 timestamp: {exc}") from None
        if self.name is not None or self.id is None:
            self.name = clean_filename(self.name) if self.name else url_filename(self.url)
        return self


class EventIn(BaseModel):
    """An event as a publisher sends it (``POST /v1/events``)."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(
        description="`[A-Za-z0-9_.-]{1,64}` segments separated by `/`",
        json_schema_extra={"pattern": TOPIC_RE.pattern, "maxLength": TOPIC_MAX},
    )
    title: str = Field("", max_length=TITLE_MAX)
    body: str = Field("", max_length=BODY_MAX)
    format: Literal["text", "markdown"] = "text"
    priority: int | str = Field(
        3, description="1–5 or min, low, default, high, urgent", json_schema_extra=_PRIORITY_DOC
    )
    category: str = Field(
        "general", description="short slug", json_schema_extra={"pattern": SLUG_RE.pattern}
    )
    tags: list[Annotated[str, Field(json_schema_extra={"pattern": SLUG_RE.pattern})]] = Field(
        default_factory=list, max_length=MAX_TAGS
    )
    click: Url | None = None
    icon: Url | None = None
    image: Url | None = None
    actions: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    sensitive: bool = False
    collapse_key: (
        Annotated[str, Field(json_schema_extra={"pattern": COLLAPSE_RE.pattern})] | None
    ) = None
    deliver_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = Field(
        None, description="RFC 3339; the event is held until then"
    )
    expires_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = Field(
        None, description="RFC 3339; hidden from then on"
    )
    attachment: AttachmentIn | None = Field(
        None, description='{"id": <uploaded file>} or {"url": …, "name"?: …}'
    )

    #: Kept with the event for the compatibility layers, never read from input and never
    #: part of the event object (``/v1`` does not show it): the id of the token that
    #: published it (Gotify's ``appid``) and Gotify's ``extras``, stored unchanged.
    #: See :meth:`notifyd.core.store.Store.event_extras`.
    _token_id: int | None = PrivateAttr(None)
    _extras: dict[str, Any] | None = PrivateAttr(None)

    _topic = field_validator("topic")(classmethod(lambda cls, v: check_topic(v)))
    _priority = field_validator("priority", mode="before")(
        classmethod(lambda cls, v: parse_priority(v))
    )

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if not SLUG_RE.fullmatch(v):
            raise ValueError("category must be a slug: a–z, 0–9, '-' and '_', up to 32 characters")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not SLUG_RE.fullmatch(tag):
                raise ValueError(f"tag {tag!r} is not a slug (a–z, 0–9, '-', '_', ≤ 32 chars)")
        return v

    @field_validator("click", "icon", "image")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @field_validator("collapse_key")
    @classmethod
    def _collapse(cls, v: str | None) -> str | None:
        if v is not None and not COLLAPSE_RE.fullmatch(v):
            raise ValueError("collapse_key must be 1–64 characters of A–Z a–z 0–9 _ . : -")
        return v

    @field_validator("deliver_at", "expires_at")
    @classmethod
    def _times(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return normalize_rfc3339(v)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"not an RFC 3339 timestamp: {exc}") from None

    @model_validator(mode="after")
    def _content(self) -> EventIn:
        if not self.title and not self.body:
            raise ValueError("body: an event needs a title or a body")
        if self.deliver_at and self.expires_at and self.expires_at <= self.deliver_at:
            raise ValueError("expires_at: must be after deliver_at")
        return self


_one = TypeAdapter(EventIn)
_many = TypeAdapter(list[EventIn])


def _field_of(loc: tuple[int | str, ...], batch: bool) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"events[{item}]")
        elif item not in ("function-after", "function-before") and not str(item).startswith(
            "function-"
        ):
            parts.append(str(item))
    return ".".join(parts) if parts else ("events" if batch else "event")


def _raise_validation(exc: ValidationError, batch: bool) -> None:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    field = _field_of(loc, batch)
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not any(isinstance(p, str) for p in loc) and ": " in msg:
        # model-level checks name their field as a "field: message" prefix
        name, msg = msg.split(": ", 1)
        field = f"{field}.{name}" if loc else name
    if err.get("type") == "extra_forbidden":
        msg = f"unknown field {loc[-1]!r}"
    elif err.get("type") == "missing":
        msg = "this field is required"
    raise ValidationFailed(f"{field}: {msg}", field=field) from None


def validate_events(payload: Any) -> tuple[list[EventIn], bool]:
    """Validate a decoded JSON payload: one event object or a list of them.

    Returns the events and whether the payload was a list. Raises ``BadRequest``
    for a payload of the wrong shape and ``ValidationFailed`` naming the first bad
    field (``title``, ``events[3].actions[0].url``).
    """
    if isinstance(payload, dict):
        try:
            return [_one.validate_python(payload)], False
        except ValidationError as exc:
            _raise_validation(exc, False)
    if isinstance(payload, list):
        if not payload:
            raise ValidationFailed("events: the list is empty", field="events")
        try:
            return _many.validate_python(payload), True
        except ValidationError as exc:
            _raise_validation(exc, True)
    raise BadRequest("the body must be a JSON object (one event) or a list of events")


EVENT_FIELDS = (
    "id", "topic", "title", "body", "format", "priority", "category", "tags", "click",
    "icon", "image", "actions", "sensitive", "collapse_key", "deliver_at", "expires_at",
    "created_at", "attachment",
)  # fmt: skip


def attachment_dict(att: AttachmentIn | None) -> dict[str, Any] | None:
    """The event object's ``attachment``: id, name, type, size, expires_at, url."""
    if att is None:
        return None
    return {
        "id": att.id, "name": att.name or "attachment", "type": att.type, "size": att.size,
        "expires_at": att.expires_at, "url": att.url,
    }  # fmt: skip

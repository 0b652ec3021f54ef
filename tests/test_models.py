"""Unit tests of the event model (``notifyd.core.models.validate_events``), no daemon.

Property-based with hypothesis: generated valid events always validate and come back
with the fields they were sent with; priority names map to their numbers; a topic
with any character outside ``[A-Za-z0-9_.-/]`` is rejected naming ``topic``.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from notifyd.core.errors import BadRequest, ValidationFailed
from notifyd.core.models import EventIn, validate_events

# Deterministic (the same examples on every run) and no example database on disk.
PROPS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

SEGMENT_CHARS = string.ascii_letters + string.digits + "_.-"
TOPIC_CHARS = SEGMENT_CHARS + "/"
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PRIORITY_NAMES = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5}

# -- strategies ------------------------------------------------------------------------

segments = st.text(SEGMENT_CHARS, min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
topics = st.lists(segments, min_size=1, max_size=5).map("/".join).filter(lambda t: len(t) <= 255)
slugs = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,31}", fullmatch=True)
collapse_keys = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True),
    st.text(string.ascii_letters + string.digits + "-._~%/?#=&", max_size=60),
)
actions = st.builds(
    lambda label, url, method: (
        {"label": label, "url": url} | ({} if method is None else {"method": method})
    ),
    st.text(min_size=1, max_size=40),
    urls,
    st.none() | st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
# From 1970 (earlier times are refused) to the year 9000.
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
     timezone(timedelta(hours=14))]
)  # fmt: skip
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=zones
)
priorities = st.one_of(
    st.integers(1, 5).map(lambda p: (p, p)),
    st.integers(1, 5).map(lambda p: (str(p), p)),
    st.sampled_from(sorted(PRIORITY_NAMES.items())),
    st.sampled_from([("MIN", 1), (" High ", 4), ("Urgent", 5), ("normal", 3), ("max", 5)]),
)


def normalized(dt: datetime) -> str:
    """What the model should store for ``dt``: UTC, milliseconds (truncated), ``Z``."""
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, the fields the validated model must hold)."""
    title = draw(st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=256)))
    body = draw(st.one_of(st.text(max_size=200), st.just("b" * 4096)))
    assume(title or body)
    payload: dict[str, Any] = {"topic": draw(topics), "title": title, "body": body}
    expected = dict(payload)
    optional = {
        "format": st.sampled_from(["text", "markdown"]),
        "category": slugs,
        "tags": st.lists(slugs, max_size=16),
        "click": urls,
        "icon": urls,
        "image": urls,
        "actions": st.lists(actions, max_size=3),
        "sensitive": st.booleans(),
        "collapse_key": collapse_keys,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            payload[name] = expected[name] = draw(strategy)
    if draw(st.booleans()):
        payload["priority"], expected["priority"] = draw(priorities)
    deliver = draw(st.none() | instants)
    expires = draw(st.none() | instants)
    if deliver is not None and expires is not None:
        assume(normalized(expires) > normalized(deliver))
    for name, value in (("deliver_at", deliver), ("expires_at", expires)):
        if value is not None:
            payload[name] = value.isoformat()
            expected[name] = normalized(value)
    return payload, expected


DEFAULTS = {
    "attachment": None,
    "title": "",
    "body": "",
    "format": "text",
    "priority": 3,
    "category": "general",
    "tags": [],
    "click": None,
    "icon": None,
    "image": None,
    "actions": [],
    "sensitive": False,
    "collapse_key": None,
    "deliver_at": None,
    "expires_at": None,
}


def dumped(ev: EventIn) -> dict[str, Any]:
    d = ev.model_dump()
    d["actions"] = [a.model_dump(exclude_none=True) for a in ev.actions]
    return d


def rejected(payload: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate_events(payload)
    return info.value


# -- valid events ------------------------------------------------------------------------


@PROPS
@given(valid_events())
def test_valid_events_validate_and_round_trip(case: tuple[dict, dict]) -> None:
    payload, expected = case
    events, batch = validate_events(payload)
    assert batch is False and len(events) == 1
    got = dumped(events[0])
    assert got == {**DEFAULTS, **expected}
    for name in ("deliver_at", "expires_at"):
        if got[name] is not None:
            assert RFC3339_Z.match(got[name]), got[name]
    # validating the stored form again changes nothing (scheduled events do this)
    again = EventIn.model_validate_json(events[0].model_dump_json())
    assert dumped(again) == got


@settings(PROPS, max_examples=50)
@given(st.lists(valid_events(), min_size=1, max_size=5))
def test_valid_lists_validate_in_order(cases: list[tuple[dict, dict]]) -> None:
    events, batch = validate_events([p for p, _ in cases])
    assert batch is True
    assert [dumped(e) for e in events] == [{**DEFAULTS, **exp} for _, exp in cases]


def test_minimal_event_gets_the_defaults() -> None:
    (ev,), batch = validate_events({"topic": "t", "body": "b"})
    assert not batch
    assert dumped(ev) == {**DEFAULTS, "topic": "t", "body": "b"}


# -- priority ------------------------------------------------------------------------------


@PROPS
@given(priorities)
def test_priority_names_and_numbers_map_right(case: tuple[Any, int]) -> None:
    value, number = case
    (ev,), _ = validate_events({"topic": "t", "title": "x", "priority": value})
    assert ev.priority == number


@pytest.mark.parametrize("name,number", sorted(PRIORITY_NAMES.items()))
def test_each_documented_priority_name(name: str, number: int) -> None:
    (ev,), _ = validate_events({"topic": "t", "title": "x", "priority": name})
    assert ev.priority == number


@PROPS
@given(
    st.one_of(
        st.integers().filter(lambda p: not 1 <= p <= 5),
        st.booleans(),
        st.floats(),
        st.none(),
        # digit strings are tested above; any other text must be a known name
        st.text().filter(
            lambda s: (
                s.strip().lower() not in {*PRIORITY_NAMES, "normal", "max"}
                and not s.strip().isdigit()
            )
        ),
        st.sampled_from(["0", "6", "10", "-1", "huge", "3.0", ""]),
    )
)
def test_bad_priorities_are_rejected(value: Any) -> None:
    assert rejected({"topic": "t", "title": "x", "priority": value}).field == "priority"


# -- topics ---------------------------------------------------------------------------------

outside_chars = st.characters().filter(lambda c: c not in TOPIC_CHARS)


@PROPS
@given(topics, st.integers(min_value=0), outside_chars)
@example("alerts", 6, "\x00")
@example("a/b", 1, " ")
@example("a", 0, "é")
def test_a_char_outside_the_alphabet_is_rejected(topic: str, pos: int, char: str) -> None:
    pos %= len(topic) + 1
    bad = topic[:pos] + char + topic[pos:]
    # A trailing newline slips through: see test_trailing_newline_is_rejected.
    assume(not bad.endswith("\n"))
    err = rejected({"topic": bad, "title": "x"})
    assert err.field == "topic" and err.code == "invalid"


@PROPS
@given(st.text().filter(lambda s: any(c not in TOPIC_CHARS for c in s)))
def test_any_string_with_an_outside_char_is_rejected(topic: str) -> None:
    assume(not topic.endswith("\n"))  # see test_trailing_newline_is_rejected
    assert rejected({"topic": topic, "title": "x"}).field == "topic"


def reference_topic_ok(topic: str) -> bool:
    segs = topic.split("/")
    return (
        0 < len(topic) <= 255
        and all(0 < len(s) <= 64 and set(s) <= set(SEGMENT_CHARS) for s in segs)
        and not any(s in (".", "..") for s in segs)
    )


@PROPS
@given(st.text(TOPIC_CHARS, max_size=80) | st.text("a./", max_size=8))
@example("a//b")
@example("../x")
@example("a/./b")
@example("x" * 65)
@example("x" * 64)
@example("/".join(["y" * 63] * 4))
@example("/".join(["y" * 64] * 4))
def test_topics_over_the_alphabet_follow_the_segment_rules(topic: str) -> None:
    payload = {"topic": topic, "title": "x"}
    if reference_topic_ok(topic):
        assert validate_events(payload)[0][0].topic == topic
    else:
        assert rejected(payload).field == "topic"


@pytest.mark.parametrize(
    "field,payload",
    [
        ("topic", {"topic": "alerts\n"}),
        ("category", {"category": "general\n"}),
        ("tags", {"tags": ["ok\n"]}),
        ("collapse_key", {"collapse_key": "key\n"}),
    ],
)
def test_trailing_newline_is_rejected(field: str, payload: dict) -> None:
    assert rejected({"topic": "t", "title": "x", **payload}).field == field


# -- other fields, shapes, error naming ------------------------------------------------------


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"topic": "t", "title": "x" * 257}, "title"),
        ({"topic": "t", "body": "x" * 4097}, "body"),
        ({"topic": "t"}, "body"),
        ({"title": "x"}, "topic"),
        ({"topic": "t", "title": "x", "category": "Not A Slug"}, "category"),
        ({"topic": "t", "title": "x", "tags": ["fine", "not fine"]}, "tags"),
        ({"topic": "t", "title": "x", "tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"topic": "t", "title": "x", "click": "javascript:alert(1)"}, "click"),
        ({"topic": "t", "title": "x", "icon": "ftp://example.com/i.png"}, "icon"),
        ({"topic": "t", "title": "x", "image": "data:image/png;base64,AAAA"}, "image"),
        ({"topic": "t", "title": "x", "click": "https://exa mple.com/"}, "click"),
        ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "https://e.com/x"}] * 4},
         "actions"),
        ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "javascript:x()"}]},
         "actions[0].url"),
        ({"topic": "t", "title": "x", "actions": [{"label": "", "url": "https://e.com/x"}]},
         "actions[0].label"),
        ({"topic": "t", "title": "x", "actions": [{"label": "a", "url": "https://e.com/x",
                                                    "method": "TRACE"}]}, "actions[0].method"),
        ({"topic": "t", "title": "x", "colour": "red"}, "colour"),
        ({"topic": "t", "title": "x", "format": "html"}, "format"),
        ({"topic": "t", "title": "x", "collapse_key": "has space"}, "collapse_key"),
        ({"topic": "t", "title": "x", "deliver_at": "2030-01-01T10:00:00"}, "deliver_at"),
        ({"topic": "t", "title": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"topic": "t", "title": "x", "deliver_at": "2030-01-02T00:00:00Z",
          "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
        ([], "events"),
        ([{"topic": "t", "title": "x"}, {"topic": "t", "title": "x" * 257}], "events[1].title"),
        ([{"topic": "t", "title": "x"}, {"topic": "a//b", "title": "x"}], "events[1].topic"),
    ],
)  # fmt: skip
def test_invalid_fields_are_named(payload: Any, field: str) -> None:
    err = rejected(payload)
    assert err.field == field
    assert err.status == 422 and err.code == "invalid"
    assert err.message


@pytest.mark.parametrize("payload", ["x", 42, None, True, 1.5])
def test_wrong_shapes_are_bad_requests(payload: Any) -> None:
    with pytest.raises(BadRequest):
        validate_events(payload)


@pytest.mark.parametrize(
    "second,field",
    [
        ({"topic": "t"}, "events[1].body"),
        ({"topic": "t", "title": "x", "deliver_at": "2030-01-02T00:00:00Z",
          "expires_at": "2030-01-01T00:00:00Z"}, "events[1].expires_at"),
    ],
)  # fmt: skip
def test_model_level_errors_in_a_list_name_the_field(second: dict, field: str) -> None:
    assert rejected([{"topic": "t", "title": "x"}, second]).field == field


def test_years_before_1970_are_refused_and_stored_times_are_fixed_width() -> None:
    assert (
        rejected({"topic": "t", "title": "x", "deliver_at": "0999-01-01T00:00:00Z"}).field
        == "deliver_at"
    )
    (ev,), _ = validate_events(
        {"topic": "t", "title": "x", "deliver_at": "2026-01-01T01:00:00+01:00"}
    )
    assert ev.deliver_at == "2026-01-01T00:00:00.000Z"


def test_far_future_timestamps_keep_their_milliseconds() -> None:
    (ev,), _ = validate_events(
        {"topic": "t", "title": "x", "expires_at": "2500-06-15T12:34:56.234Z"}
    )
    assert ev.expires_at == "2500-06-15T12:34:56.234Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("", None),
        ("²", None),
        ("١٢", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1" * 20, None),
        ("1e3", None),
    ],  # fmt: skip
)
def test_ascii_int_takes_only_ascii_digits_in_range(text: str, expected: int | None) -> None:
    from notifyd.core.models import ascii_int

    assert ascii_int(text) == expected
    assert ascii_int("1000", max_value=999) is None

"""Property tests (hypothesis) of event validation, the ACL matcher and ntfy's
parameter parsers.

The ACL properties compare notifyd's matcher with a reference model written here
from DESIGN.md's rules alone: a pattern is a glob where ``*`` matches any run of
characters (``/`` included; the run may be empty); a user reads a topic when one of
its grants with ``read`` matches it and writes when one with ``write`` does; admins
read and write everything; a token narrows its user by scopes (``publish`` = write,
``subscribe`` = read, ``admin`` = both) and by an optional topic pattern.
"""

from __future__ import annotations

import os
import sqlite3
import string
from functools import cache

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from notifyd.api.compat.ntfy_params import (
    NtfyError,
    Params,
    check_topic_name,
    parse_actions,
    parse_filters,
    parse_priority,
    split_tags,
)
from notifyd.api.compat.ntfy_time import parse_delay, parse_duration, parse_since
from notifyd.core.acl import SCOPES, Grant, Principal, Visibility, glob_match
from notifyd.core.errors import BadRequest, ValidationFailed
from notifyd.core.models import (
    BODY_MAX,
    EVENT_FIELDS,
    MAX_ACTIONS,
    MAX_TAGS,
    PRIORITY_NAMES,
    TITLE_MAX,
    URL_MAX,
    EventIn,
    validate_events,
)
from notifyd.core.sqlite.queries import visibility_sql

settings.register_profile(
    "notifyd",
    max_examples=int(os.environ.get("NOTIFYD_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("notifyd")


# -- strategies: valid events -------------------------------------------------------

SEG_CHARS = string.ascii_letters + string.digits + "_.-"
segment = st.text(SEG_CHARS, min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
topics = st.lists(segment, min_size=1, max_size=4).map("/".join).filter(lambda t: len(t) <= 255)
slug = st.from_regex(r"\A[a-z0-9][a-z0-9_\-]{0,31}\Z")
url = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}",
    st.sampled_from(["http", "https", "HTTPS", "Http"]),
    st.from_regex(r"\A[a-z0-9-]{3,30}(\.[a-z]{2,6})?\Z"),
    st.text(string.ascii_letters + string.digits + "/-_?=&%.", max_size=60).map(lambda p: "/" + p),
)
priority = st.one_of(
    st.integers(1, 5),
    st.sampled_from(sorted(PRIORITY_NAMES)),
    st.sampled_from(sorted(PRIORITY_NAMES)).map(str.upper),
    st.integers(1, 5).map(str),
    st.integers(1, 5).map(lambda p: f" {p} "),
)
action = st.fixed_dictionaries(
    {"label": st.text(min_size=1, max_size=40), "url": url},
    optional={"method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])},
)
timestamp = st.datetimes(
    min_value=__import__("datetime").datetime(1971, 1, 1),
    max_value=__import__("datetime").datetime(9998, 1, 1),
    timezones=st.timezones(),
).map(lambda d: d.isoformat())
text = st.text(max_size=300)


@st.composite
def events(draw: st.DrawFn) -> dict:
    ev: dict = {"topic": draw(topics)}
    optional = {
        "title": st.text(max_size=TITLE_MAX),
        "body": text,
        "format": st.sampled_from(["text", "markdown"]),
        "priority": priority,
        "category": slug,
        "tags": st.lists(slug, max_size=MAX_TAGS),
        "click": url,
        "icon": url,
        "image": url,
        "actions": st.lists(action, max_size=MAX_ACTIONS),
        "sensitive": st.booleans(),
        "collapse_key": st.from_regex(r"\A[A-Za-z0-9_.:\-]{1,64}\Z"),
        "expires_at": timestamp,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            ev[name] = draw(strategy)
    if not ev.get("title") and not ev.get("body"):
        ev["title"] = draw(st.text(min_size=1, max_size=20))
    return ev


def dump(event: EventIn) -> dict:
    return event.model_dump(exclude_none=True)


# -- event validation -----------------------------------------------------------------


@PROFILE
@given(events())
def test_valid_events_are_accepted_and_normalised_idempotently(raw: dict) -> None:
    (ev,), batch = validate_events(raw)
    assert not batch
    assert ev.topic == raw["topic"]
    assert 1 <= ev.priority <= 5 and isinstance(ev.priority, int)
    again, _ = validate_events(dump(ev))
    assert again[0] == ev
    assert set(dump(ev)) <= set(EVENT_FIELDS)
    if ev.expires_at is not None:
        # the stored form: fixed-width UTC, so that times sort as text
        assert len(ev.expires_at) == 24 and ev.expires_at.endswith("Z")


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 4, 10))
@given(st.lists(events(), min_size=1, max_size=5))
def test_a_valid_list_is_accepted_whole(raws: list[dict]) -> None:
    evs, batch = validate_events(raws)
    assert batch and [e.topic for e in evs] == [r["topic"] for r in raws]


@PROFILE
@given(priority)
def test_priorities_by_number_and_name(p: object) -> None:
    (ev,), _ = validate_events({"topic": "t", "title": "x", "priority": p})
    if isinstance(p, int):
        expected = p
    elif p.strip().isdigit():
        expected = int(p)
    else:
        expected = PRIORITY_NAMES[p.strip().lower()]
    assert ev.priority == expected


#: (field path, a bad value, where the error must point) — one per rule
def _bad_values() -> st.SearchStrategy[tuple[str, object, str]]:
    bad_topic = st.one_of(
        st.just(""),
        st.just("."),
        st.just("a/../b"),
        st.just("a//b"),
        st.just("/a"),
        st.text(SEG_CHARS, min_size=65, max_size=80),
        st.text(min_size=1, max_size=20).filter(lambda t: any(c not in SEG_CHARS + "/" for c in t)),
        st.integers(),
        st.none(),
    )
    bad_url = st.one_of(
        st.sampled_from(
            ["javascript:alert(1)", "ftp://example.com/x", "//example.com/x", "http://",
             "https://exa mple.com", "data:text/html,hi", "file:///etc/passwd"]
        ),
        st.just("https://e.com/" + "x" * URL_MAX),
        st.text(max_size=30).filter(lambda u: not u.lower().startswith(("http://", "https://"))),
    )  # fmt: skip
    bad_priority = st.one_of(
        st.integers().filter(lambda p: not 1 <= p <= 5),
        st.booleans(),
        st.text(max_size=10).filter(
            lambda p: (
                p.strip().lower() not in PRIORITY_NAMES
                and not (p.strip().isdigit() and 1 <= int(p.strip()) <= 5)
            )
        ),
        st.floats(allow_nan=True),
        st.none(),
    )
    bad_slug = st.text(max_size=40).filter(
        lambda s: not s or len(s) > 32 or not s[0].isascii() or not s.isascii()
        or any(c not in string.ascii_lowercase + string.digits + "-_" for c in s)
        or s[0] in "-_"
    )  # fmt: skip
    return st.one_of(
        bad_topic.map(lambda v: ("topic", v, "topic")),
        st.text(min_size=TITLE_MAX + 1, max_size=TITLE_MAX + 5).map(
            lambda v: ("title", v, "title")
        ),
        st.just(("body", "b" * (BODY_MAX + 1), "body")),
        bad_priority.map(lambda v: ("priority", v, "priority")),
        bad_slug.map(lambda v: ("category", v, "category")),
        bad_slug.map(lambda v: ("tags", ["ok", v], "tags")),
        st.just(("tags", ["t"] * (MAX_TAGS + 1), "tags")),
        st.sampled_from(["click", "icon", "image"]).flatmap(
            lambda f: bad_url.map(lambda v: (f, v, f))
        ),
        bad_url.map(lambda v: ("actions", [{"label": "a", "url": v}], "actions[0].url")),
        st.just(("actions", [{"label": "", "url": "https://e.com"}], "actions[0].label")),
        st.just(("actions", [{"label": "a" * 41, "url": "https://e.com"}], "actions[0].label")),
        st.text(max_size=10).filter(lambda m: m not in {"GET", "POST", "PUT", "DELETE", "PATCH"})
        .map(lambda m: ("actions", [{"label": "a", "url": "https://e.com", "method": m}],
                        "actions[0].method")),
        st.just(("actions", [{"label": "a", "url": "https://e.com", "x": 1}], "actions[0].x")),
        st.just(("actions", [{"label": "a", "url": "https://e.com"}] * (MAX_ACTIONS + 1),
                 "actions")),
        st.sampled_from(["2030-01-01T00:00:00", "yesterday", "", "1969-12-31T23:59:59Z",
                         "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
        .map(lambda v: ("expires_at", v, "expires_at")),
        st.sampled_from(["", "a b", "x" * 65, "ü"]).map(
            lambda v: ("collapse_key", v, "collapse_key")
        ),
        st.sampled_from(["format"]).map(lambda f: (f, "html", f)),
        st.just(("sensitive", "maybe", "sensitive")),
        st.sampled_from(["id", "created_at", "nope"]).map(lambda f: (f, 1, f)),
    )  # fmt: skip


@PROFILE
@given(events(), _bad_values())
def test_invalid_input_names_the_field(raw: dict, bad: tuple[str, object, str]) -> None:
    name, value, path = bad
    raw = {**raw, name: value}
    with pytest.raises(ValidationFailed) as exc:
        validate_events(raw)
    assert exc.value.field == path, (exc.value.field, exc.value.message)
    assert exc.value.message.startswith(f"{path}: ")
    # in a list, the same error points into it
    with pytest.raises(ValidationFailed) as exc:
        validate_events([{"topic": "ok", "title": "ok"}, raw])
    assert exc.value.field == f"events[1].{path}", exc.value.field


@PROFILE
@given(events())
def test_no_title_and_no_body_is_refused_on_body(raw: dict) -> None:
    raw = {**raw, "title": "", "body": ""}
    with pytest.raises(ValidationFailed) as exc:
        validate_events(raw)
    assert exc.value.field == "body"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@PROFILE
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(EVENT_FIELDS), json_values)))
@example([])
@example({"topic": "a", "title": "x", "deliver_at": "2030-01-01T00:00:00Z",
          "expires_at": "2029-01-01T00:00:00Z"})  # fmt: skip
def test_arbitrary_json_is_accepted_or_refused_cleanly(payload: object) -> None:
    try:
        evs, _ = validate_events(payload)
    except ValidationFailed as exc:
        assert exc.field, exc.message
        assert exc.message.startswith(f"{exc.field}: ") or exc.field in ("body", "events")
    except BadRequest:
        assert not isinstance(payload, (dict, list))
    else:
        assert all(isinstance(e, EventIn) for e in evs)


# -- the ACL matcher against a reference model -------------------------------------


def ref_match(pattern: str, topic: str) -> bool:
    """DESIGN.md's glob, written independently: ``*`` = any run (possibly empty)
    of any characters; everything else matches itself."""

    @cache
    def m(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(topic)
        if pattern[i] == "*":
            return m(i + 1, j) or (j < len(topic) and m(i, j + 1))
        return j < len(topic) and pattern[i] == topic[j] and m(i + 1, j + 1)

    return m(0, 0)


# a small alphabet so that patterns and topics often meet
small_topic = st.lists(st.text("ab.", min_size=1, max_size=3), min_size=1, max_size=3).map("/".join)
small_pattern = st.lists(st.text("ab.*", min_size=1, max_size=3), min_size=1, max_size=3).map(
    "/".join
) | st.sampled_from(["*", "a*", "*/b", "a/*", "*a*"])


@PROFILE
@given(small_pattern, small_topic)
def test_glob_matches_like_the_reference(pattern: str, topic: str) -> None:
    assert glob_match(pattern, topic) == ref_match(pattern, topic)


@PROFILE
@given(topics, topics)
def test_an_exact_pattern_matches_only_itself(pattern: str, topic: str) -> None:
    assert glob_match(pattern, pattern)
    assert glob_match(pattern, topic) == (pattern == topic)


@PROFILE
@given(topics, st.lists(segment, min_size=1, max_size=3).map("/".join))
def test_star_crosses_segments(prefix: str, rest: str) -> None:
    assert glob_match("*", prefix)
    assert glob_match(prefix + "/*", f"{prefix}/{rest}")
    assert glob_match("*/" + rest, f"{prefix}/{rest}")
    assert not glob_match(prefix + "/*", prefix)  # the '/' itself must be there


@PROFILE
@given(small_pattern, small_topic)
def test_sqlite_glob_agrees_with_the_matcher(pattern: str, topic: str) -> None:
    """History queries turn Visibility into SQL (``GLOB``): same answers."""
    vis = Visibility(everything=False, any_of=(pattern,))
    params: list = []
    where = visibility_sql(vis, params, column="t")
    with sqlite3.connect(":memory:") as db:
        (hit,) = db.execute(f"SELECT {where} FROM (SELECT ? AS t)", [*params, topic]).fetchone()
    assert bool(hit) == glob_match(pattern, topic)


grants = st.lists(st.builds(Grant, small_pattern, st.booleans(), st.booleans()), max_size=4).map(
    tuple
)
scopes = st.sets(st.sampled_from(SCOPES)).map(frozenset)


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    return Principal(
        user_id=1,
        name="u",
        role=draw(st.sampled_from(["admin", "user"])),
        grants=draw(grants),
        scopes=draw(scopes),
        token_pattern=draw(st.none() | small_pattern),
    )


def ref_allowed(p: Principal, topic: str, mode: str) -> bool:
    scope_ok = "admin" in p.scopes or ("publish" if mode == "write" else "subscribe") in p.scopes
    token_ok = p.token_pattern is None or ref_match(p.token_pattern, topic)
    if p.role == "admin":
        granted = True
    else:
        granted = any(
            ref_match(g.pattern, topic) and (g.write if mode == "write" else g.read)
            for g in p.grants
        )
    return scope_ok and token_ok and granted


@PROFILE
@given(principals(), small_topic)
def test_rights_follow_the_documented_rules(p: Principal, topic: str) -> None:
    assert p.can_read(topic) == ref_allowed(p, topic, "read")
    assert p.can_write(topic) == ref_allowed(p, topic, "write")
    # answers are cached: asking twice gives the same
    assert p.can_read(topic) == ref_allowed(p, topic, "read")


@PROFILE
@given(principals(), st.lists(small_topic, min_size=1, max_size=8))
def test_visibility_agrees_with_can_read(p: Principal, ts: list[str]) -> None:
    vis = p.visibility()
    params: list = []
    where = visibility_sql(vis, params, column="t") or "1"
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE e (t TEXT)")
        db.executemany("INSERT INTO e VALUES (?)", [(t,) for t in ts])
        sql_visible = {t for (t,) in db.execute(f"SELECT t FROM e WHERE {where}", params)}
    for t in ts:
        assert vis.allows(t) == p.can_read(t), t
        assert (t in sql_visible) == p.can_read(t), (t, where, params)
    if vis.empty:
        assert not any(p.can_read(t) for t in ts)


@PROFILE
@given(principals(), grants, small_topic)
def test_more_grants_never_take_rights_away(p: Principal, extra: tuple, topic: str) -> None:
    more = Principal(p.user_id, p.name, p.role, p.grants + extra, p.scopes, p.token_pattern)
    assert not p.can_read(topic) or more.can_read(topic)
    assert not p.can_write(topic) or more.can_write(topic)


@PROFILE
@given(principals())
def test_admin_needs_role_and_scope(p: Principal) -> None:
    from notifyd.core.errors import Forbidden

    if p.role == "admin" and "admin" in p.scopes:
        p.require_admin()
    else:
        with pytest.raises(Forbidden):
            p.require_admin()


# -- ntfy's parameter parsers: anything in, NtfyError or a value out --------------------

header_text = st.text(
    st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60
) | st.sampled_from(["=?UTF-8?B?w7w=?=", "=?bogus?Q?x?=", "=?UTF-8?B?###?=", "1h30m",
                     "99999999999999999999d", "tomorrow, 10am", "25:99pm", "monday 3pm",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                     "1e309s", "10am", "13pm", "0am"])  # fmt: skip


@PROFILE
@given(st.dictionaries(
    st.sampled_from(["x-priority", "x-tags", "x-title", "x-message", "x-id", "priority", "tags"]),
    header_text, max_size=4,
))  # fmt: skip
def test_ntfy_filters_raise_only_ntfy_errors(headers: dict[str, str]) -> None:
    try:
        parse_filters(Params(headers, {}))
    except NtfyError:
        pass


@PROFILE
@given(
    header_text, st.booleans(), st.sampled_from(["", "UTC", "Europe/Berlin", "Nowhere/X", "../etc"])
)
def test_ntfy_times_raise_only_ntfy_errors(value: str, poll: bool, tz: str) -> None:
    for parse in (
        lambda: parse_since(value, poll, now=1.7e9),
        lambda: parse_delay(value, tz, now=1.7e9),
        lambda: parse_duration(value),
    ):
        try:
            parse()
        except NtfyError:
            pass


@PROFILE
@given(header_text)
def test_ntfy_values_raise_only_ntfy_errors(value: str) -> None:
    for parse in (
        lambda: parse_priority(value),
        lambda: split_tags(value),
        lambda: parse_actions(value),
        lambda: check_topic_name(value),
    ):
        try:
            parse()
        except NtfyError:
            pass


@PROFILE
@given(json_values)
def test_ntfy_json_actions_raise_only_ntfy_errors(value: object) -> None:
    assume(isinstance(value, list))
    try:
        parse_actions(value)  # type: ignore[arg-type]
    except NtfyError:
        pass

"""Linear-time matching wherever user input meets a pattern (issue 13).

Topic globs (``notifyd.core.globs``) must answer exactly as the old regex
translation did on ordinary patterns and do a bounded, deterministic amount of
work on hostile ones; ``check_pattern`` normalises and caps patterns; ntfy's time
values either parse or are refused with ntfy's 400, never raise anything else;
and a real daemon keeps answering while a user throws such patterns at it.

No test here measures wall-clock time: work is bounded by counting the string
operations the matcher makes (``match_trace``) and by the parsers refusing long
input before looking at it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifyd.api.compat.ntfy_params import DELAY_PARSE, SINCE, NtfyError
from notifyd.api.compat.ntfy_time import (
    MAX_LENGTH,
    MAX_UNIX,
    from_unix,
    parse_delay,
    parse_duration,
    parse_natural,
    parse_since,
    to_unix,
)
from notifyd.core import acl
from notifyd.core.globs import glob_match, match_trace, split_pattern
from notifyd.core.models import PATTERN_MAX_WILDCARDS, check_pattern

PROFILE = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the reference: the regex translation notifyd used before --------------------------------------
#
# Why it had to go: "*" became ".*", so a pattern with k stars is k nested greedy
# loops. When the topic cannot match (e.g. 24 stars then "Z" against a topic without
# a "Z" at its end), `re` tries every way to cut the topic into k runs — about
# C(n + k, k) of them, ~10^14 for n = 30, k = 24 — and holds the GIL all the while,
# so the daemon's single trio loop stops. Measured before the change: 8 stars + "Z"
# against 30 characters took ~0.17 s and each extra star multiplies that by ~5.
# It is only ever run below on inputs small enough to be fast.


def regex_reference(pattern: str, topic: str) -> bool:
    if "*" not in pattern:
        return pattern == topic
    rx = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(rx, topic, re.S) is not None


def dp_reference(pattern: str, topic: str) -> bool:
    """Textbook dynamic programme, O(len(pattern) × len(topic)): a second, independent
    reference that is safe on long inputs."""
    row = [True] + [False] * len(topic)  # row[j]: pattern[:i] matches topic[:j]
    for ch in pattern:
        if ch == "*":
            new = [row[0]]
            for j in range(1, len(topic) + 1):
                new.append(row[j] or new[j - 1])
        else:
            new = [False] + [row[j - 1] and topic[j - 1] == ch for j in range(1, len(topic) + 1)]
        row = new
    return row[-1]


small_alphabet = "ab/.-*"
small_patterns = st.text(small_alphabet, max_size=10) | st.sampled_from(
    ["*", "**", "a*", "*a", "*a*", "a**b", "*/*", "a/*", "*/b", "a*a*a", "-*-", ""]
)
small_topics = st.text("ab/.-", max_size=12)


@PROFILE
@given(small_patterns, small_topics)
@example("*", "")
@example("", "")
@example("a*", "a")
@example("*a", "a")
@example("a*a", "a")  # the prefix and the suffix may not share the one "a"
@example("a*a", "aa")
@example("ab*ba", "aba")
@example("**", "anything")
@example("a/*", "a/b/c")
def test_glob_match_agrees_with_the_old_regex(pattern: str, topic: str) -> None:
    assert glob_match(pattern, topic) == regex_reference(pattern, topic)
    assert glob_match(pattern, topic) == dp_reference(pattern, topic)


def test_glob_match_edge_cases() -> None:
    assert glob_match("*", "") and glob_match("*", "a/b/c")
    assert glob_match("alerts/disk", "alerts/disk")  # pattern == topic
    assert not glob_match("alerts/disk", "alerts/disks")
    assert glob_match("alerts/*", "alerts/") and not glob_match("alerts/*", "alerts")
    assert glob_match("*/disk", "host/a/disk") and not glob_match("*/disk", "disk")
    assert glob_match("a**b", "ab") and glob_match("a*b", "a/x/b")
    assert glob_match("*-*-*", "a-b-c") and not glob_match("*-*-*", "a-b")
    assert glob_match("ab*ab*ab", "ababab") and not glob_match("ab*ab*ab", "abab")
    # nothing but '*' is special: '?', '[' and '.' are literal
    assert glob_match("a?", "a?") and not glob_match("a?", "ab")
    assert glob_match("[ab]*", "[ab]x") and not glob_match("[ab]*", "a")
    assert not glob_match("a.c", "abc")
    assert not glob_match("A*", "a")  # case matters, as in SQLite's GLOB
    # the ACL module still offers the same function
    assert acl.glob_match is glob_match


def test_split_pattern_drops_the_empty_pieces_of_star_runs() -> None:
    assert split_pattern("a*b**c*") == ("a", ("b", "c"), "")
    assert split_pattern("*" * 24 + "Z") == ("", (), "Z")
    assert split_pattern("**") == ("", (), "")


# -- hostile patterns: a deterministic bound on the work ---------------------------------------------


def assert_bounded(pattern: str, topic: str) -> list[tuple[str, int, int]]:
    """One startswith, one endswith and at most one find per piece between stars, and
    the find windows only ever move forward (no backtracking)."""
    result, trace = match_trace(pattern, topic)
    assert result == glob_match(pattern, topic)
    assert len(trace) <= pattern.count("*") + 2, trace
    finds = [start for op, start, _ in trace if op == "find"]
    assert finds == sorted(finds), trace
    assert all(0 <= s <= e <= len(topic) for _, s, e in trace), trace
    return trace


HOSTILE = [
    ("*" * 24 + "Z", "a" * 30),
    ("*" * 24 + "Z", "a" * 255),
    ("*a" * 100 + "b", "a" * 255),
    ("*a" * 100 + "*b", "a" * 254 + "b"),  # matches, after 100 finds
    ("*a" * 127 + "*", "a" * 127),
    ("*b" * 100 + "*a", "a" * 255),
    ("a*" * 127 + "Z", "a" * 255),
    ("*/" * 127, "a/" * 127 + "a"),
    ("*ab" * 80 + "*c", "ab" * 127 + "c"),
]


@pytest.mark.parametrize(("pattern", "topic"), HOSTILE)
def test_hostile_patterns_take_a_bounded_number_of_steps(pattern: str, topic: str) -> None:
    trace = assert_bounded(pattern, topic)
    assert glob_match(pattern, topic) == dp_reference(pattern, topic)
    # a run of stars is one wildcard: 24 stars then "Z" is two checks, not 24 loops
    if pattern.startswith("*" * 24):
        assert len(trace) == 2


@PROFILE
@given(st.text("ab*/", max_size=255), st.text("ab/", max_size=255))
@example("*" * 254 + "a", "b" * 255)
def test_any_pattern_costs_at_most_one_step_per_piece(pattern: str, topic: str) -> None:
    assert_bounded(pattern, topic)


@PROFILE
@given(st.text("ab*", max_size=40), st.text("ab", max_size=60))
def test_long_patterns_agree_with_the_dp_reference(pattern: str, topic: str) -> None:
    assert glob_match(pattern, topic) == dp_reference(pattern, topic)


# -- check_pattern -------------------------------------------------------------------------------------


def test_check_pattern_collapses_runs_of_stars() -> None:
    assert check_pattern("a**b") == "a*b"
    assert check_pattern("***") == "*"
    assert check_pattern("*" * 24 + "Z") == "*Z"
    assert check_pattern("alerts/**/disk**") == "alerts/*/disk*"


def test_check_pattern_caps_the_wildcards() -> None:
    at_cap = "*a" * PATTERN_MAX_WILDCARDS
    assert check_pattern(at_cap) == at_cap
    with pytest.raises(ValueError, match=f"at most {PATTERN_MAX_WILDCARDS} '\\*' wildcards"):
        check_pattern("*a" * (PATTERN_MAX_WILDCARDS + 1))
    # runs count once, so many stars in a row are not over the cap
    assert check_pattern("**a" * PATTERN_MAX_WILDCARDS) == at_cap
    with pytest.raises(ValueError, match="topic pattern"):
        check_pattern("a b")
    with pytest.raises(ValueError, match="topic pattern"):
        check_pattern("a" * 256)


ordinary = st.lists(
    st.text("abz09_.-", min_size=1, max_size=8) | st.just("*"), min_size=1, max_size=12
).map("".join)


@PROFILE
@given(ordinary, st.text("abz09_.-/", max_size=30))
@example("alerts/*", "alerts/disk")
def test_check_pattern_keeps_normal_patterns_and_meaning(pattern: str, topic: str) -> None:
    try:
        normal = check_pattern(pattern)
    except ValueError as exc:
        assert len(pattern) > 255 or re.sub(r"\*+", "*", pattern).count("*") > 8, exc
        return
    if "**" not in pattern:
        assert normal == pattern
    assert "**" not in normal and normal.count("*") <= PATTERN_MAX_WILDCARDS
    assert check_pattern(normal) == normal
    assert glob_match(normal, topic) == glob_match(pattern, topic)


# -- ntfy times ---------------------------------------------------------------------------------------

NOW = 1.7e9

_OLD_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_OLD_UNITS = {
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], 1),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], 60),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], 3600),
    **dict.fromkeys(["d", "day", "days"], 86400),
    **dict.fromkeys(["w", "week", "weeks"], 604800),
}


def old_parse_duration(text: str) -> float | None:
    """The ``finditer`` parser notifyd had: quadratic on long digit runs (every start
    position re-reads the run), fine on the short inputs it gets here."""
    t = text.strip().lower()
    if not t:
        return None
    total, pos = 0.0, 0
    for m in _OLD_PART.finditer(t):
        if t[pos : m.start()].strip(" ,") or m.group(2) not in _OLD_UNITS:
            return None
        total += float(m.group(1)) * _OLD_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or t[pos:].strip():
        return None
    return total


@PROFILE
@given(st.text("0123456789. ,\tmhdswinecourk", max_size=MAX_LENGTH))
@example("1h30m")
@example(",30m")
@example("30m,")
@example("1.5 hours, 2 mins")
@example("1.m")
@example("1hx")
def test_parse_duration_agrees_with_the_old_parser(text: str) -> None:
    assert parse_duration(text) == old_parse_duration(text)


hostile_time_text = (
    st.text(max_size=80)
    | st.text("0123456789", min_size=1, max_size=80)
    | st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.sampled_from([
        "300000000000", "9999999999999999999", "-5", "²", "١٢٣٤٥٦٧٨٩", "12²",
        "99999999999999999999d", "9" * 63 + "w", "1e400", "inf", "nan",
        "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "0000-01-01T00:00:00Z",
        "tomorrow, 25:99pm", "sunday 13pm", "today", "10am", "1" * 60_000,
    ])
)  # fmt: skip
zones = st.sampled_from(["", "UTC", "Europe/Berlin", "Nowhere/X", "../etc", "Europe", "a" * 5000,
                         "a\x00b", "/etc/passwd", "Etc/GMT+14", "zone.tab"])  # fmt: skip


@PROFILE
@given(hostile_time_text, st.booleans(), zones)
def test_ntfy_times_return_a_value_or_refuse(value: str, poll: bool, tz: str) -> None:
    """Every parser answers or raises ntfy's 400, whatever the string."""
    try:
        since = parse_since(value, poll, now=NOW)
    except NtfyError as err:
        assert err.http == 400
    else:
        if since.kind == "time":
            assert 0 <= since.value <= MAX_UNIX
            from_unix(since.value)  # the stream turns it into a cursor: must not raise
    try:
        at = parse_delay(value, tz, now=NOW)
    except NtfyError as err:
        assert err.http == 400
    else:
        assert math.isfinite(at) and at <= MAX_UNIX
        if at >= 0:
            from_unix(at)
    seconds = parse_duration(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    for zone in (UTC, timezone(timedelta(hours=14))):
        parse_natural(value, datetime(2024, 5, 1, 12, tzinfo=zone))  # a datetime or None
    parse_natural(value, datetime(9999, 12, 31, 23, tzinfo=UTC))  # "tomorrow" is year 10000
    try:
        to_unix(value)
    except NtfyError as err:
        assert err.http == 400


@PROFILE
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20))
@example(300_000_000_000)
@example(MAX_UNIX + 0.5)
def test_from_unix_returns_a_timestamp_or_refuses(ts: float) -> None:
    try:
        out = from_unix(ts)
    except NtfyError as err:
        assert err.http == 400
        assert not (math.isfinite(ts) and 0 <= ts <= MAX_UNIX)
    else:
        assert out.endswith("Z") and to_unix(out) == int(ts)


def test_out_of_range_times_are_refused_not_raised() -> None:
    with pytest.raises(NtfyError) as info:
        parse_since("300000000000", False, now=NOW)  # year 11476: datetime cannot hold it
    assert info.value.code == SINCE
    with pytest.raises(NtfyError) as info:
        parse_since("9999999999999999999", True, now=NOW)
    assert info.value.code == SINCE
    with pytest.raises(NtfyError) as info:
        parse_since("²", False, now=NOW)  # str.isdigit says yes, int() says no
    assert info.value.code == SINCE
    with pytest.raises(NtfyError) as info:
        parse_delay("9999-12-31T23:59:59-14:00", "UTC", now=NOW)  # after 9999 in UTC
    assert info.value.code == DELAY_PARSE
    with pytest.raises(NtfyError) as info:
        parse_delay("99999999w", "UTC", now=NOW)
    assert info.value.code == DELAY_PARSE
    with pytest.raises(NtfyError) as info:
        parse_since("6000w", False, now=NOW)  # over 100 years
    assert info.value.code == SINCE
    assert parse_since("5000w", False, now=NOW).value == 0  # before 1970: the beginning
    # ordinary values still work
    assert parse_since("1700000000", False, now=NOW).value == 1_700_000_000
    assert parse_since("12", False, now=NOW).value == 12
    assert parse_delay("30m", "UTC", now=NOW) == NOW + 1800
    assert parse_delay("tomorrow, 3pm", "UTC", now=NOW) > NOW


def test_a_huge_digit_run_is_refused_before_it_is_scanned() -> None:
    """60,000 digits used to cost tens of seconds in the duration scan. Now the length
    check refuses it first, whatever the parser: no scan happens at all."""
    huge = "1" * 60_000
    for parse in (lambda: parse_delay(huge, "UTC", now=NOW), lambda: parse_since(huge, False)):
        with pytest.raises(NtfyError) as info:
            parse()
        assert f"longer than {MAX_LENGTH} characters" in str(info.value)
    assert parse_duration(huge) is None
    assert parse_duration(huge + "s") is None
    assert parse_natural(huge, datetime(2024, 5, 1, tzinfo=UTC)) is None
    # the longest value still read is cheap by construction, and parses
    assert parse_duration("1" * (MAX_LENGTH - 1) + "s") == float("1" * (MAX_LENGTH - 1))


# -- end to end: a real daemon keeps answering ------------------------------------------------------

STARS_Z = "*" * 24 + "Z"


def healthy(d: Daemon) -> bool:
    return httpx.get(d.url + "/healthz", timeout=5).status_code == 200


def next_event(lines: Any) -> dict:
    import json

    for line in lines:
        if line.startswith("data:") and '"type":"event"' in line:
            return json.loads(line[5:])["event"]
    raise AssertionError("the stream ended")


def test_hostile_patterns_do_not_freeze_the_daemon(daemon: Daemon) -> None:
    token = daemon.user("pat", grants={"alerts/*": "read"})
    miss = "alerts/" + "a" * 30  # cannot end in "Z": the old matcher's worst case
    hit = "alerts/" + "a" * 29 + "Z"
    with daemon.http(token) as c, daemon.admin() as admin:
        # over the cap: refused with 422 wherever a pattern comes in
        capped = "*a" * (PATTERN_MAX_WILDCARDS + 1)
        r = c.get("/v1/stream/sse", params={"topics": capped})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "topics"
        assert admin.post("/v1/acl", json={"user": "pat", "pattern": capped,
                                           "permission": "read"}).status_code == 422  # fmt: skip
        assert c.get("/v1/events", params={"topic": capped}).status_code == 422
        # preferences through the socket (admin, ?user=): no account scope needed here
        prefs = {"params": {"user": "pat"}}
        r = admin.put("/v1/preferences", json={"rules": [{"topic": capped, "mute": True}]}, **prefs)
        assert r.status_code == 422, r.text

        # a run of 24 stars is one wildcard: accepted, stored normalised in preferences
        rules = [{"topic": STARS_Z + "Q", "mute": True}]
        r = admin.put("/v1/preferences", json={"rules": rules}, **prefs)
        assert r.status_code == 200, r.text
        assert admin.get("/v1/preferences", **prefs).json()["rules"][0]["topic"] == "*ZQ"
        r = admin.post("/v1/tokens", json={"user": "pat", "topics": STARS_Z})
        assert r.status_code == 201, r.text
        narrowed = r.json()["token"]
        assert c.get("/v1/events", params={"topic": STARS_Z}).status_code == 200

        with (
            httpx.Client(base_url=daemon.url, timeout=10) as streamer,
            streamer.stream(
                "GET", "/v1/stream/sse", params={"topics": STARS_Z, "token": narrowed}
            ) as s,
        ):
            assert s.status_code == 200
            lines = s.iter_lines()
            # publishing a topic the pattern cannot match makes the hub, the outbox and
            # the preferences match it against every hostile pattern above
            admin.post("/v1/events", json={"topic": miss, "title": "miss"}).raise_for_status()
            assert wait_for(lambda: healthy(daemon), timeout=10, message="/healthz")
            admin.post("/v1/events", json={"topic": hit, "title": "hit"}).raise_for_status()
            assert next_event(lines)["topic"] == hit
        assert wait_for(lambda: healthy(daemon), timeout=10, message="/healthz")
        with daemon.http(narrowed) as n:
            r = n.get("/v1/events")
            assert r.status_code == 200
            assert [e["topic"] for e in r.json()["events"]] == [hit]


def test_ntfy_times_out_of_range_answer_400_and_the_daemon_lives(daemon: Daemon) -> None:
    token = daemon.user("nat", grants={"nat-*": "rw"})
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{daemon.url}/nat-t/json", params={"poll": "1", "since": "300000000000"},
                  headers=auth, timeout=10)  # fmt: skip
    assert r.status_code == 400 and r.json()["code"] == SINCE, r.text
    r = httpx.post(f"{daemon.url}/nat-t", content="x", params={"delay": "1" * 2000},
                   headers=auth, timeout=10)  # fmt: skip
    assert r.status_code == 400 and r.json()["code"] == DELAY_PARSE, r.text
    r = httpx.post(f"{daemon.url}/nat-t", content="x", params={"at": "tomorrow, 3pm"},
                   headers={**auth, "X-Timezone": "Europe"}, timeout=10)  # fmt: skip
    assert r.status_code == 400, r.text
    assert wait_for(lambda: healthy(daemon), timeout=10, message="/healthz")


def test_preferences_stored_before_the_wildcard_cap_still_load() -> None:
    """A rule saved before the cap existed must not break its user's streams and
    deliveries: documents read back are normalised, only new input is capped."""
    from notifyd.core.prefs import Preferences

    doc = {"rules": [{"topic": "*a" * 9 + "**", "mute": True}]}
    prefs = Preferences.from_json(doc)
    assert prefs.rules[0].topic == "*a" * 9 + "*"
    with pytest.raises(ValueError, match="at most 8"):
        Preferences.from_json(doc, stored=False)


@pytest.mark.parametrize("tz", ["Europe", "../../etc/passwd", "a" * 5000, "Europe/../UTC", 7])
def test_a_hostile_time_zone_is_refused_not_raised(tz: object) -> None:
    from notifyd.core.prefs import Preferences

    with pytest.raises(ValueError, match="timezone"):
        Preferences.from_json({"timezone": tz}, stored=False)

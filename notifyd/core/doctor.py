"""``notifyd doctor``: checks of an installation, each ok / warn / fail with one line
saying why (and, when something is wrong, what to do).

Local checks look at the configuration and the files it names; daemon checks ask
the running daemon through an ``api(method, path, params)`` callable (the CLI's
client), so this module needs no HTTP library. A failing check never stops the
others.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .config import Config, ConfigError, load_config
from .errors import StoreUnavailable
from .storage import check_offline, database_location, engine_name, inspect_cluster

Status = Literal["ok", "warn", "fail"]
Api = Callable[..., Any]

MiB = 1024 * 1024
GiB = 1024 * MiB
#: disk space thresholds for the data directory
FAIL_FREE = 100 * MiB
WARN_FREE = 1 * GiB
WARN_FREE_RATIO = 0.10
VAPID_KEY = "vapid_private.pem"  # plugins/webpush/vapid.py


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    #: what the check found, for scripts (``--json``); None: nothing beyond ``detail``
    data: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.data is None:
            del out["data"]
        return out


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --- local checks -------------------------------------------------------------


def check_config(
    path: str | None, overrides: dict[str, Any] | None = None
) -> tuple[Check, Config | None]:
    """Load the configuration the way ``notifyd serve`` does."""
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        return Check("config", "fail", f"{exc}"), None
    where = f"{path}: valid" if path else "no --config file: defaults and NOTIFYD_* variables"
    return Check("config", "ok", f"{where} (data_dir {config.data_dir})"), config


def check_disk(data_dir: Path) -> Check:
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return Check("disk", "warn", f"cannot measure free space at {probe}: {exc.strerror}")
    ratio = usage.free / usage.total if usage.total else 0
    detail = f"{_size(usage.free)} free of {_size(usage.total)} ({ratio:.0%}) at {probe}"
    if usage.free < FAIL_FREE:
        return Check(
            "disk", "fail", f"{detail}: publishing fails when the disk is full; free space now"
        )
    if usage.free < WARN_FREE or ratio < WARN_FREE_RATIO:
        return Check("disk", "warn", f"{detail}: running low")
    return Check("disk", "ok", detail)


def check_vapid(data_dir: Path) -> Check:
    path = data_dir / VAPID_KEY
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(
            "vapid",
            "warn",
            f"no Web Push key at {path} yet: the daemon creates it when it starts with the "
            "webpush plugin",
        )
    except PermissionError:
        return Check("vapid", "warn", f"cannot look at {path}: run doctor as the daemon's user")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check(
            "vapid",
            "fail",
            f"{path} has mode {mode:04o}: others can read the private key; chmod 600 {path}",
        )
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except PermissionError:
        return Check("vapid", "warn", f"{path} mode 0600, not readable by you (not checked)")
    if b"PRIVATE KEY-----" not in head:
        return Check("vapid", "fail", f"{path} does not hold a PEM private key")
    return Check("vapid", "ok", f"{path} present, mode 0600")


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def check_socket(path: Path | None, expected_mode: str = "0660") -> Check:
    if path is None:
        return Check("socket", "ok", "no Unix socket configured (socket = none)")
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Check("socket", "fail", f"no socket at {path}: is the daemon running?")
    except PermissionError:
        return Check("socket", "warn", f"cannot look at {path}: permission denied")
    if not stat.S_ISSOCK(st.st_mode):
        return Check("socket", "fail", f"{path} is not a socket")
    mode = stat.S_IMODE(st.st_mode)
    want = int(expected_mode, 8)
    owner = _owner(st)
    if mode & 0o007:
        return Check(
            "socket",
            "fail",
            f"{path} has mode {mode:04o} (owner {owner}): anyone on this machine can act as "
            f"admin; it should be {want:04o} — restart the daemon, or chmod {want:o} {path}",
        )
    if mode != want:
        return Check(
            "socket", "warn", f"{path} has mode {mode:04o} (owner {owner}), expected {want:04o}"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(
            "socket",
            "warn",
            f"{path} mode {mode:04o}, owner {owner}: you cannot open it — join group "
            f"{owner.split(':')[1]}",
        )
    return Check("socket", "ok", f"{path} mode {mode:04o}, owner {owner}")


def check_database_offline(config: Config) -> Check:
    """The database of a daemon that is not running, checked by its engine."""
    try:
        report = check_offline(config)
    except ConfigError as exc:
        return Check("database", "fail", str(exc))
    where = report.location
    if not report.exists:
        return Check("database", "warn", f"no database at {where} yet (created on first start)")
    if not report.ok:
        return Check("database", "fail", f"{where}: " + "; ".join(report.problems[:5]))
    how = (
        "checked on the file: the daemon is not running"
        if engine_name(config) == "sqlite"
        else "checked on the server: no daemon answered here"
    )
    return Check(
        "database",
        "ok",
        f"{where}: {report.check} ok, {report.events} events, schema v{report.schema_version} "
        f"({how})",
    )


def check_jwks(config: Config) -> Check:
    """Whether ``jwt_jwks_url`` answers with usable signing keys, fetched the way the
    daemon does (its destination policy, timeout and size cap). Runs its own trio
    loop: call it outside one."""
    import trio

    from .jwt import FetchFailed, fetch_json, parse_key_set

    async def fetch() -> Check:
        try:
            data, max_age = await fetch_json(
                config.jwt_jwks_url, config.destination_policy, "the JWK set"
            )
            keys = parse_key_set(data)
        except FetchFailed as exc:
            return Check("jwks", "fail", f"jwt_jwks_url: {exc}; JWTs are refused until it works")
        kids = ", ".join(str(k.kid) for k in keys if k.kid) or "no key ids"
        cache = f"max-age {max_age:.0f} s" if max_age is not None else "no max-age"
        return Check("jwks", "ok", f"{len(keys)} signing key(s) ({kids}); {cache}",
                     {"keys": len(keys), "max_age": max_age})  # fmt: skip

    return trio.run(fetch)


# --- cluster checks (PostgreSQL) ------------------------------------------------

#: a round trip to the server slower than this (ms) is a warning: every publish
#: waits for several
SLOW_ROUND_TRIP_MS = 100.0
#: a node whose heartbeat (every 10 s) is older than this is stale (seconds)
STALE_AFTER = 60.0
#: a node's clock further than this from the server's is a warning / a failure
#: (seconds, either way): event times, schedules and leases rely on the clocks
SKEW_WARN = 1.0
SKEW_FAIL = 5.0


def _signed(seconds: float) -> str:
    return f"{seconds:+.3f} s"


def check_cluster(config: Config) -> list[Check]:
    """The checks of a PostgreSQL database, read directly (whether or not a daemon
    runs here): ``connection``, ``schema``, ``nodes`` and ``clock``."""
    where = database_location(config)
    try:
        state = inspect_cluster(config)
    except (StoreUnavailable, ConfigError) as exc:
        skipped = "not checked: no connection to the database"
        return [
            Check("connection", "fail", f"cannot connect to {where}: {exc}"),
            *(Check(name, "warn", skipped) for name in ("schema", "nodes", "clock")),
        ]
    checks: list[Check] = []
    latency = f"{state.latency_ms:.1f} ms round trip"
    connection_data = {"location": where, "server_version": state.server_version,
                       "latency_ms": round(state.latency_ms, 3)}  # fmt: skip
    if state.latency_ms > SLOW_ROUND_TRIP_MS:
        checks.append(Check("connection", "warn", f"{where}: PostgreSQL {state.server_version}, "
                            f"{latency}: slow (publishing waits for several)", connection_data))  # fmt: skip
    else:
        checks.append(Check("connection", "ok",
                            f"{where}: PostgreSQL {state.server_version}, {latency}",
                            connection_data))  # fmt: skip

    found, expected = state.schema_version, state.expected_version
    schema_data = {"version": found, "expected": expected}
    if found is None:
        checks.append(Check("schema", "warn", "not migrated yet: run `notifyd migrate` "
                            "(serve also migrates when it starts)", schema_data))  # fmt: skip
    elif found < expected:
        checks.append(Check("schema", "warn", f"version {found}, behind this notifyd "
                            f"({expected}): run `notifyd migrate`", schema_data))  # fmt: skip
    elif found > expected:
        checks.append(Check("schema", "fail", f"version {found}, ahead of this notifyd "
                            f"({expected}): a newer notifyd migrated it; this one must not "
                            "serve it — upgrade it", schema_data))  # fmt: skip
    else:
        checks.append(Check("schema", "ok", f"version {found}, up to date", schema_data))

    nodes = state.nodes
    node_data = {"nodes": [n.to_json() for n in nodes], "stale_after_seconds": STALE_AFTER}
    stale = [n for n in nodes if n.seen_ago > STALE_AFTER]
    listing = ", ".join(
        f"{n.name} ({n.host} pid {n.pid}, {n.version}, seen {_duration(n.seen_ago)} ago)"
        for n in nodes
    )
    if not nodes:
        checks.append(Check("nodes", "warn", "no node is running on this database", node_data))
    elif stale:
        names = ", ".join(n.name for n in stale)
        checks.append(Check("nodes", "warn", f"not seen for over {STALE_AFTER:.0f} s: {names} "
                            f"(crashed, or cut off from the database?); all: {listing}",
                            node_data))  # fmt: skip
    else:
        checks.append(Check("nodes", "ok", f"{len(nodes)} running: {listing}", node_data))

    clock_data = {
        "offsets": {n.name: round(n.clock_offset, 6) for n in nodes},
        "this_machine": round(state.local_offset, 6),
        "warn_above_seconds": SKEW_WARN,
        "fail_above_seconds": SKEW_FAIL,
    }
    worst = max(nodes, key=lambda n: abs(n.clock_offset), default=None)
    mine = f"this machine {_signed(state.local_offset)}"
    if worst is None:
        checks.append(Check("clock", "ok", f"no nodes to compare; {mine} from the server",
                            clock_data))  # fmt: skip
    else:
        offsets = ", ".join(f"{n.name} {_signed(n.clock_offset)}" for n in nodes)
        detail = f"offsets from the server's clock: {offsets}; {mine}"
        skew = abs(worst.clock_offset)
        if skew > SKEW_FAIL:
            checks.append(Check("clock", "fail", f"{worst.name} is {skew:.1f} s off: event "
                                "times, schedules and delivery leases go wrong; run NTP "
                                f"(chrony, systemd-timesyncd) on every node — {detail}",
                                clock_data))  # fmt: skip
        elif skew > SKEW_WARN:
            checks.append(Check("clock", "warn", f"{worst.name} is {skew:.1f} s off: keep the "
                                f"nodes' clocks in sync (NTP) — {detail}", clock_data))  # fmt: skip
        else:
            checks.append(Check("clock", "ok", detail, clock_data))
    return checks


# --- daemon checks ------------------------------------------------------------


def check_daemon(api: Api, target: str) -> tuple[Check, dict[str, Any] | None]:
    try:
        health = api("GET", "/healthz") or {}
    except Exception as exc:  # the client's error says where it looked and what to do
        return Check("daemon", "fail", str(exc)), None
    up = float(health.get("uptime_seconds") or 0)
    return (
        Check(
            "daemon",
            "ok",
            f"notifyd {health.get('version', '?')} at {target}: up {_duration(up)}, "
            f"last event #{health.get('last_event_id', 0)}, "
            f"{health.get('stream_clients', 0)} stream clients",
        ),
        health,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _status_of(exc: Exception) -> int:
    return int(getattr(exc, "status", 0) or 0)


def check_database_online(api: Api) -> Check:
    try:
        result = api("GET", "/v1/admin/integrity") or {}
    except Exception as exc:
        if _status_of(exc) in (401, 403):
            return Check("database", "warn", f"not checked: {exc}")
        return Check("database", "fail", f"the integrity check failed to run: {exc}")
    if not result.get("ok"):
        problems = "; ".join(result.get("problems") or [])[:500]
        return Check(
            "database",
            "fail",
            f"{result.get('path')}: {problems} — restore the last good backup (docs/operations.md)",
        )
    return Check(
        "database",
        "ok",
        f"{result.get('path')}: {result.get('check') or 'check'} ok in {result.get('seconds')} s, "
        f"{_size(result.get('size_bytes') or 0)} (WAL {_size(result.get('wal_bytes') or 0)})",
    )


def check_channels(api: Api, test: bool = False) -> list[Check]:
    """One check per channel: from its last success/error, or with ``test`` a real
    test notification (which the channel's owner receives)."""
    try:
        channels = (api("GET", "/v1/channels", params={"all": "true"}) or {}).get("channels")
    except Exception as exc:
        status: Status = "warn" if _status_of(exc) in (401, 403) else "fail"
        return [Check("channels", status, f"cannot list channels: {exc}")]
    if not channels:
        return [Check("channels", "ok", "no channels configured")]
    checks = []
    for ch in channels:
        name = f"channel {ch.get('user')}/{ch.get('name')}"
        kind = ch.get("kind")
        if not ch.get("available", True):
            checks.append(Check(name, "fail", f"no loaded plugin provides channel kind {kind!r}: "
                                              "install it or add it to `plugins`"))  # fmt: skip
            continue
        if not ch.get("enabled", True):
            checks.append(Check(name, "warn", f"{kind}: disabled"))
            continue
        if test:
            try:
                result = api(
                    "POST",
                    f"/v1/channels/{ch.get('name')}/test",
                    params={"user": ch.get("user")},
                )
            except Exception as exc:
                checks.append(Check(name, "fail", f"{kind}: test failed: {exc}"))
                continue
            if result and result.get("ok"):
                checks.append(Check(name, "ok", f"{kind}: test notification sent"))
            else:
                checks.append(
                    Check(name, "fail", f"{kind}: test failed: {(result or {}).get('error')}")
                )
            continue
        ok_at, err_at = ch.get("last_success_at"), ch.get("last_error_at")
        if err_at and (not ok_at or err_at > ok_at):
            checks.append(Check(name, "warn", f"{kind}: last send failed at {err_at}: "
                                              f"{ch.get('last_error')}"))  # fmt: skip
        elif ok_at:
            checks.append(Check(name, "ok", f"{kind}: last delivered at {ok_at}"))
        else:
            checks.append(Check(name, "ok", f"{kind}: nothing sent yet (--test-channels to try)"))
    return checks


def check_deliveries(api: Api) -> Check:
    try:
        stats = api("GET", "/v1/stats") or {}
    except Exception as exc:
        return Check("deliveries", "warn", f"not checked: {exc}")
    by_kind = stats.get("by_channel") or {}
    dead = sum(int(row.get("dead") or 0) for row in by_kind.values())
    pending = sum(int(row.get("pending") or 0) for row in by_kind.values())
    if dead:
        return Check("deliveries", "warn", f"{dead} dead deliveries, {pending} pending "
                                           "(notifyd deliveries list --state dead)")  # fmt: skip
    return Check("deliveries", "ok", f"no dead deliveries, {pending} pending")


# --- all of them ---------------------------------------------------------------


def run_checks(
    config_path: str | None,
    overrides: dict[str, Any],
    api: Api,
    target: str,
    socket_path: Path | None,
    *,
    test_channels: bool = False,
) -> list[Check]:
    """Every check, in order. ``socket_path``: the socket the CLI connects through
    (None over TCP), which is the one whose mode matters to its users."""
    checks: list[Check] = []
    cfg_check, config = check_config(config_path, overrides)
    checks.append(cfg_check)
    if config is not None:
        checks.append(check_disk(config.data_path))
        checks.append(check_vapid(config.data_path))
        sock = socket_path if socket_path is not None else config.socket_path
        checks.append(check_socket(sock, config.socket_mode))
        if config.jwt_jwks_url:
            checks.append(check_jwks(config))
    else:
        skipped = "not checked: the configuration did not load"
        checks += [Check(n, "warn", skipped) for n in ("disk", "vapid", "socket")]
    daemon, health = check_daemon(api, target)
    checks.append(daemon)
    if health is not None:
        checks.append(check_database_online(api))
        checks.append(check_deliveries(api))
        checks += check_channels(api, test_channels)
    elif config is not None:
        checks.append(check_database_offline(config))
    if config is not None and engine_name(config) == "postgresql":
        checks += check_cluster(config)
    return checks


def exit_status(checks: list[Check]) -> int:
    """1 if anything failed; warnings alone still pass."""
    return 1 if any(c.status == "fail" for c in checks) else 0

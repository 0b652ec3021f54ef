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
from .storage import check_offline

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

    def to_json(self) -> dict[str, str]:
        return asdict(self)


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
    return Check(
        "database",
        "ok",
        f"{where}: {report.check} ok, {report.events} events, schema v{report.schema_version} "
        "(checked on the file: the daemon is not running)",
    )


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
    return checks


def exit_status(checks: list[Check]) -> int:
    """1 if anything failed; warnings alone still pass."""
    return 1 if any(c.status == "fail" for c in checks) else 0

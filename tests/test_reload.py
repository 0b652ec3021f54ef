"""SIGHUP reloads the configuration without dropping streams (real daemon)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
from conftest import Daemon, wait_for

from notifyd.config import Config
from notifyd.reload import LIVE_KEYS, apply_reload


def test_sighup_changes_the_log_level_while_a_stream_stays_connected(
    make_daemon: Any, tmp_path: Path
) -> None:
    conf = tmp_path / "notifyd.toml"
    conf.write_text('log_level = "info"\nmax_batch_events = 100\n')
    d: Daemon = make_daemon(extra_args=["--config", str(conf)]).start()
    with (
        d.admin() as c,
        httpx.Client(
            transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://notifyd", timeout=10
        ) as streamer,
    ):
        first = d.publish("reload", title="before")
        with streamer.stream("GET", "/v1/stream/sse", params={"since": first["id"] - 1}) as s:
            lines = s.iter_lines()

            def next_event() -> str:
                for line in lines:
                    if line.startswith("data:") and '"type":"event"' in line:
                        return line
                raise AssertionError("the stream ended")

            assert '"before"' in next_event()
            assert "level=debug" not in d.log()
            conf.write_text('log_level = "debug"\nmax_batch_events = 2\nreaders = 2\n')
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "needs a restart" in d.log(), message="the reload to be logged")
            log = d.log()
            assert "reloaded: log_level='debug', max_batch_events=2" in log, log
            assert "needs a restart to take effect: readers" in log, log
            # the new limit applies at once
            r = c.post("/v1/events", json=[{"topic": "reload", "title": str(i)} for i in range(3)])
            assert r.status_code == 413 and "at most 2" in r.json()["error"]["message"], r.text
            # the open stream still delivers, and debug lines now appear (a new stream
            # logs one at debug level)
            d.publish("reload", title="after")
            assert '"after"' in next_event()
            with streamer.stream("GET", "/v1/stream/sse") as other:
                assert other.status_code == 200
                wait_for(lambda: "level=debug" in d.log(), message="a debug line after the reload")
            assert httpx.get(d.url + "/healthz").status_code == 200

            # a file that no longer loads changes nothing
            conf.write_text('log_level = "info"\nmax_batch_events = 3\nnonsense = 1\n')
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in d.log(), message="the failed reload")
            assert "notifyd.toml:3: unknown key 'nonsense'" in d.log()
            r = c.post("/v1/events", json=[{"topic": "reload", "title": str(i)} for i in range(3)])
            assert r.status_code == 413, r.text
            d.publish("reload", title="still")
            assert '"still"' in next_event()


def test_apply_reload_splits_live_keys_from_restart_keys() -> None:
    running = Config(log_level="info", retention_days=30, readers=4)
    applied, restart = apply_reload(
        running, lambda: Config(log_level="warning", retention_days=90, readers=8)
    )
    assert sorted(applied) == ["log_level", "retention_days"]
    assert restart == ["readers"]
    assert running.retention_days == 90 and running.readers == 4
    assert "listen" not in LIVE_KEYS and "data_dir" not in LIVE_KEYS

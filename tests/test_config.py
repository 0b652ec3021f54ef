"""Configuration: the sample file is complete, precedence is file < flags < env,
and mistakes stop start-up with a message naming the key and its line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from notifyd.config import KEYS, Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_sample_config_documents_every_key_with_its_default() -> None:
    text = (ROOT / "notifyd.toml").read_text()
    keys = re.findall(r"^(\w+) =", text, re.M)
    assert sorted(keys) == sorted(KEYS)
    # every key has a comment right above it
    lines = text.splitlines()
    for key in keys:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[index - 1].startswith("#"), f"{key} has no comment"
    cfg = load_config(ROOT / "notifyd.toml", environ={})
    defaults = Config()
    for key in KEYS:
        if key not in ("socket",):  # the sample pins the socket under ./var
            assert getattr(cfg, key) == getattr(defaults, key), key


def test_precedence_file_then_flags_then_env(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('retention_days = 40\ndata_dir = "/srv/a"\nlisten = ["127.0.0.1:1"]\n')
    cfg = load_config(path, {"data_dir": "/srv/b"}, environ={"NOTIFYD_RETENTION_DAYS": "90"})
    assert cfg.retention_days == 90
    assert cfg.data_dir == "/srv/b"
    assert cfg.listen == ["127.0.0.1:1"]
    cfg = load_config(path, {}, environ={"NOTIFYD_LISTEN": "127.0.0.1:5,127.0.0.1:6"})
    assert cfg.listen == ["127.0.0.1:5", "127.0.0.1:6"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('log_level = "info"\nretention = 30\n', r"n\.toml:2: unknown key 'retention'"),
        ("retention_days = 0\n", r"retention_days = 0: must be at least 1"),
        ('retention_days = "many"\n', r"n\.toml:1: retention_days = 'many'"),
        ('listen = ["nowhere"]\n', r"'nowhere' is not HOST:PORT"),
        ('log_level = "loud"\n', r"log_level = 'loud': must be one of"),
        ("listen = [\n", r"not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "n.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


def test_serve_refuses_bad_config_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('data_dir = "x"\nsynchronus = "full"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "notifyd", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "n.toml:2: unknown key 'synchronus'" in proc.stderr
    assert not (tmp_path / "x").exists(), "nothing may be created for a config that does not load"


def test_config_show_prints_effective_values_with_sources_and_masks_secrets(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "n.toml"
    conf.write_text('retention_days = 40\nbase_url = "https://admin:hunter2@notify.example.org"\n')
    env = {**os.environ, "NOTIFYD_READERS": "7"}
    run = [sys.executable, "-m", "notifyd", "config", "show", "--config", str(conf)]
    out = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout
    assert f"retention_days = 40  # file {conf}" in out
    assert "readers = 7  # environment NOTIFYD_READERS" in out
    assert 'log_level = "info"  # default' in out
    assert "hunter2" not in out and "https://****@notify.example.org" in out
    as_json = subprocess.run([*run, "--json"], env=env, capture_output=True, text=True, check=True)
    data = json.loads(as_json.stdout)
    assert data["retention_days"] == 40 and data["readers"] == 7
    assert "hunter2" not in as_json.stdout
    conf.write_text("retention_days = 40\nbogus = 1\n")
    bad = subprocess.run(run, env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "n.toml:2: unknown key 'bogus'" in bad.stderr

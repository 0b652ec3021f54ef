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


# --- cluster settings: database_password_file, node_name (issue 15) --------------------


def test_node_name_defaults_to_host_and_pid_and_is_validated(tmp_path: Path) -> None:
    cfg = load_config(environ={})
    host, _, pid = cfg.node_name.rpartition("-")
    assert pid == str(os.getpid()) and host
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cfg.node_name)
    assert load_config(environ={"NOTIFYD_NODE_NAME": ""}).node_name == cfg.node_name
    assert load_config(environ={"NOTIFYD_NODE_NAME": "eu-1.b_2"}).node_name == "eu-1.b_2"
    assert load_config(overrides={"node_name": "a" * 64}, environ={}).node_name == "a" * 64
    path = tmp_path / "n.toml"
    path.write_text('node_name = "web-2"\n')
    assert load_config(path, environ={}).node_name == "web-2"
    for bad in ("a" * 65, "two words", "ä", "a/b", "x\n"):
        with pytest.raises(ConfigError, match=r"node_name = .*: must be 1-64 letters"):
            load_config(overrides={"node_name": bad}, environ={})


def test_database_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret pw \n")
    cfg = load_config(environ={"NOTIFYD_DATABASE_PASSWORD_FILE": str(secret)})
    assert cfg.database_password_file == str(secret)
    assert cfg.database_password() == "s3cret pw "  # only the trailing newline goes
    secret.write_text("rotated")  # read at each use
    assert cfg.database_password() == "rotated"
    assert load_config(environ={}).database_password() is None

    def refused(file: Path, url: str = "") -> str:
        env = {"NOTIFYD_DATABASE_PASSWORD_FILE": str(file), "NOTIFYD_DATABASE_URL": url}
        with pytest.raises(ConfigError) as caught:
            load_config(environ=env)
        return str(caught.value)

    message = refused(tmp_path / "missing")
    assert f"database_password_file: cannot read {tmp_path / 'missing'}" in message
    assert "No such file" in message
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert f"{empty} is empty" in refused(empty)
    if os.geteuid() != 0:  # root reads any file
        secret.chmod(0)
        assert "Permission denied" in refused(secret)
        secret.chmod(0o600)
    # one place for the password: the URL may not carry one as well
    secret.write_text("from-the-file\n")
    for url in ("postgresql://app:in-the-url@db/notifyd", "postgresql://db/n?password=in-the-url"):
        message = refused(secret, url)
        assert "database_url carries a password and database_password_file is set" in message
        assert "in-the-url" not in message and "from-the-file" not in message


def test_cluster_settings_flags_env_and_config_show(tmp_path: Path) -> None:
    """serve's --database-url, --database-password-file and --node-name reach the
    configuration; NOTIFYD_* variables the same; the password is never printed."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2-db\n")
    url = "postgresql://app:hunter2-url@127.0.0.1:1/notifyd"
    serve = [sys.executable, "-m", "notifyd", "serve", "--data-dir", str(tmp_path / "d")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    # a password in the URL given as a flag: the refusal never repeats it
    proc = subprocess.run([*serve, "--database-url", url, "--data-dir", str(tmp_path / "pg")],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0
    assert (
        "PostgreSQL" in proc.stderr and "postgresql://app:****@127.0.0.1:1/notifyd" in proc.stderr
    )
    assert "hunter2" not in proc.stdout + proc.stderr
    # the file flag is read (missing file: a config error naming the key)
    proc = subprocess.run([*serve, "--database-password-file", str(tmp_path / "nope")], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0
    assert f"database_password_file: cannot read {tmp_path / 'nope'}" in proc.stderr
    # both: refused before anything else, without either password
    proc = subprocess.run([*serve, "--database-url", url, "--database-password-file",
                           str(secret)], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "database_url carries a password and database_password_file is set" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    proc = subprocess.run([*serve, "--node-name", "bad name"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "node_name = 'bad name': must be 1-64" in proc.stderr
    assert not (tmp_path / "d").exists()

    show = [sys.executable, "-m", "notifyd", "config", "show", "--json"]
    env_set = {**env, "NOTIFYD_DATABASE_PASSWORD_FILE": str(secret), "NOTIFYD_NODE_NAME": "n-7",
               "NOTIFYD_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}  # fmt: skip
    out = subprocess.run(show, env=env_set, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["node_name"] == "n-7"
    assert data["database_url"] == f"sqlite:///{tmp_path}/x.db"
    assert data["database_password_file"] in (str(secret), "****")
    assert "hunter2" not in out


def test_redact_url() -> None:
    from notifyd.core.config import redact_url, url_has_password

    assert redact_url("postgresql://app:p%40ss@db:5432/n") == "postgresql://app:****@db:5432/n"
    assert redact_url("postgresql://db/n?sslmode=require&password=x1") == (
        "postgresql://db/n?sslmode=require&password=****"
    )
    assert redact_url("postgresql://app@db/n") == "postgresql://app@db/n"
    assert url_has_password("postgresql://app:x@db/n")
    assert not url_has_password("postgresql://app@db/n")
    assert not url_has_password("")


def test_log_lines_carry_the_node_name() -> None:
    import logging

    from notifyd.logs import LogfmtFormatter

    record = logging.LogRecord("notifyd.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    line = LogfmtFormatter(journald=True, node="web-2").format(record)
    assert line == '<6>level=info node=web-2 logger=notifyd.x msg="hello you"'
    assert "node=" not in LogfmtFormatter(journald=True).format(record)

"""The PostgreSQL test infrastructure (tests/pg.py): a real server, a fresh database per
test, a private throwaway cluster when NOTIFYD_TEST_DATABASE_URL is unset, and a clear
failure, never a skip, when no server can be had."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import free_port
from pg import ENV, PgCluster, PgServer, PgUnavailable, connect, database_of, pg_server_session

ROOT = Path(__file__).resolve().parent.parent
#: the databases the two tests below got, to compare
SEEN: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_working_database(
    pg_server: PgServer, pg_database: str, run: int
) -> None:
    with connect(pg_database) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database_of(pg_database),)
        # empty: nothing left by the other run, whichever ran first
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, title text NOT NULL)")
        conn.execute("INSERT INTO events VALUES (1, 'hello'), (2, 'wörld')")
        assert conn.execute("SELECT title FROM events ORDER BY id").fetchall() == [
            ("hello",),
            ("wörld",),
        ]
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    # the other run (if it ran first) had another database, dropped after it
    for earlier in SEEN:
        assert earlier != pg_database
        assert not pg_server.database_exists(earlier), earlier
    SEEN.append(pg_database)


def test_the_database_is_dropped_after_the_test(pg_server: PgServer) -> None:
    # the fixture's own steps, driven by hand: create, use with a connection still open, drop
    url = pg_server.create_database()
    assert pg_server.database_exists(url)
    conn = connect(url)
    try:
        conn.execute("CREATE TABLE t (x int)")
        pg_server.drop_database(url)  # WITH (FORCE): an open connection does not stop it
    finally:
        conn.close()
    assert not pg_server.database_exists(url)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        connect(url).close()


def test_a_prepared_template_is_copied_into_each_database(pg_server: PgServer) -> None:
    """Work done once (a migrated schema, say) reaches every database made from it."""

    def prepare(url: str) -> None:
        with connect(url) as conn:
            conn.execute("CREATE TABLE schema_version (version int)")
            conn.execute("INSERT INTO schema_version VALUES (7)")

    template = pg_server.create_template(prepare)
    first, second = (pg_server.create_database(template=template) for _ in range(2))
    fresh = pg_server.create_database()
    try:
        assert first != second
        for url in (first, second):
            with connect(url) as conn:
                assert conn.execute("SELECT version FROM schema_version").fetchone() == (7,)
        with connect(first) as conn:  # copies, not shared
            conn.execute("UPDATE schema_version SET version = 8")
        with connect(second) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchone() == (7,)
        # the session's own template stays empty
        with connect(fresh) as conn:
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)
    finally:
        for url in (first, second, fresh, template):
            pg_server.drop_database(url)


@pytest.mark.slow
def test_a_private_cluster_really_starts_and_is_removed() -> None:
    """What the session does when NOTIFYD_TEST_DATABASE_URL is unset, done here directly
    (as root, initdb and the server run as an unprivileged user)."""
    with pg_server_session(environ={}) as server:
        cluster = server.cluster
        assert cluster is not None
        assert cluster.base.is_dir()
        with server.admin() as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()
            assert data_dir == (str(cluster.data),)
            port = conn.execute("SHOW port").fetchone()
            assert port == (str(cluster.port),)
            sockets = conn.execute("SHOW unix_socket_directories").fetchone()
            assert sockets == (str(cluster.base),)
        # never root: initdb and postgres refuse it
        assert cluster.data.stat().st_uid == cluster.run_as.uid != 0
        assert (cluster.base / f".s.PGSQL.{cluster.port}").exists()
        url = server.create_database()
        with connect(url) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        # stop and start again at the same address (what failover tests need)
        assert cluster.running()
        cluster.stop()
        assert not cluster.running()
        with pytest.raises(psycopg.OperationalError):
            connect(url).close()
        cluster.start()
        with connect(url) as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        base = cluster.base
    assert not base.exists(), "the cluster's directory is deleted at the end"
    with pytest.raises(psycopg.OperationalError):
        connect(url, connect_timeout=2).close()


def test_no_server_and_no_binaries_is_a_clear_error(tmp_path: Path) -> None:
    # no URL, no /usr/lib/postgresql here, nothing on PATH: the reason and the remedies
    empty = {"PATH": str(tmp_path)}
    with (
        pytest.raises(
            PgUnavailable, match=rf"{ENV} is unset and no PostgreSQL server binaries"
        ) as caught,
        pg_server_session(empty, globs=[str(tmp_path / "*" / "bin")]),
    ):
        pass
    assert "postgresql package" in str(caught.value)


def test_an_unreachable_server_fails_the_tests_with_the_reason(tmp_path: Path) -> None:
    """A test that needs PostgreSQL, run with the URL pointing at a closed port: the run
    fails (not skipped), and the message names the variable and the reason."""
    port = free_port()  # bound and released: nothing listens there
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/postgres"
    env = {**os.environ, ENV: url}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_postgres_server.py::test_the_database_is_dropped_after_the_test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "skipped" not in out, out
    assert "1 error" in out, out
    assert f"{ENV}=postgresql://postgres:****@127.0.0.1:{port}/postgres cannot be used" in out
    assert "Connection refused" in out or "connection failed" in out, out
    assert "s3cret-pw" not in out


def test_databases_left_by_a_dead_run_are_dropped(pg_server: PgServer) -> None:
    """A run killed before its teardown leaves its databases; the next session on this
    machine drops them (those of live processes, or in use, stay)."""
    import pg

    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # never a live pid
    namespace = pg._pid_namespace()
    left = f"{pg.DB_PREFIX}{namespace}x{dead_pid}_deadbeef"
    mine = f"{pg.DB_PREFIX}{namespace}x{os.getpid()}_0123abcd"
    with pg_server.admin() as conn:
        for name in (left, mine):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        PgServer(pg_server.url).setup().close()  # what a new session does first
        assert not pg_server.database_exists(left)
        assert pg_server.database_exists(mine)
    finally:
        pg_server.drop_database(left)
        pg_server.drop_database(mine)


@pytest.mark.slow
def test_a_cluster_left_running_by_a_killed_session_is_removed() -> None:
    import pg

    left = PgCluster.create().start()
    try:
        dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # never a live pid
        (left.base / "owner").write_text(f"{pg._pid_namespace()}x{dead_pid}")
        mine = PgCluster.create()  # what the next session does first
        try:
            assert not left.base.exists()
            with pytest.raises(psycopg.OperationalError):
                connect(left.url, connect_timeout=2).close()
            assert mine.base.exists()
        finally:
            mine.destroy()
    finally:
        left.destroy()


@pytest.mark.slow
def test_as_root_without_a_postgres_user_a_dedicated_user_runs_the_cluster() -> None:
    """A PostgreSQL not from Debian's package has no ``postgres`` user: as root, the
    cluster then runs as a system user created for it (as ourselves when not root)."""
    import pwd

    import pg

    existed = _user_exists(pg.TEST_USER)
    run_as = pg.RunAs.choose(names=[pg.TEST_USER])
    try:
        if os.geteuid() == 0:
            assert run_as.name == pg.TEST_USER and run_as.uid != 0
            assert pwd.getpwnam(pg.TEST_USER).pw_shell.endswith("nologin")
        else:
            assert run_as.uid == os.geteuid()
        cluster = PgCluster.create(run_as=run_as).start()
        try:
            assert cluster.data.stat().st_uid == run_as.uid
            with connect(cluster.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            cluster.destroy()
    finally:
        if os.geteuid() == 0 and not existed:
            userdel = shutil.which("userdel") or shutil.which("userdel", path="/usr/sbin:/sbin")
            assert userdel, "useradd made the user, userdel is missing"
            subprocess.run([userdel, pg.TEST_USER], check=True, capture_output=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

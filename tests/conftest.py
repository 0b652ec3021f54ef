"""Shared fixtures: a real notifyd daemon in a subprocess on a temp data dir.

Tests talk to it the way users do: httpx over TCP (with tokens) and over the
Unix socket (as the admin), trio-websocket and SSE for streams, the CLI as a
subprocess. Waiting is always on a condition with a deadline, never a bare sleep.

Storage engines: a module marked ``pytestmark = pytest.mark.both_engines`` runs every
test that starts a daemon (``daemon``, ``make_daemon`` or anything built on the
``engine`` fixture) twice, ids ``[sqlite]`` and ``[postgresql]``; on PostgreSQL each
daemon gets a fresh database of its own on the session's server (``pg_server``), the
way each SQLite daemon has a file of its own. A test there that is SQLite-only by
nature says so: ``@pytest.mark.sqlite_only(reason="...")`` (the reason is required; the
test then runs once, ``[sqlite]``). ``pytest --engine sqlite`` runs every test with those
modules on SQLite only; ``--engine postgresql`` runs only their ``[postgresql]`` tests
(``make test`` runs the two halves side by side). Every other module runs on SQLite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest
from pg import PgServer, PgUnavailable, connect, pg_server_session

#: the storage engines a ``both_engines`` module runs on
ENGINES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine", choices=[*ENGINES, "both"], default="both",
        help="sqlite: every test, the both_engines modules on SQLite only; postgresql: only "
        "the both_engines modules' tests on PostgreSQL; both (default): every test, and the "
        "both_engines modules' daemons on each engine",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_engines: this module's daemons run on SQLite and on PostgreSQL "
        "(ids [sqlite] and [postgresql])",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): in a both_engines module, this test runs on SQLite only, "
        "for the reason given (required)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("both_engines") is None:
        return
    engines: list[str] = list(ENGINES)
    only = metafunc.definition.get_closest_marker("sqlite_only")
    if only is not None:
        reason = only.kwargs.get("reason") or (only.args[0] if only.args else "")
        if not str(reason).strip():
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason")
        engines = ["sqlite"]
    chosen = metafunc.config.getoption("engine")
    if chosen != "both":
        engines = [e for e in engines if e == chosen]
    if not engines:
        return  # sqlite_only under --engine postgresql: deselected (collection_modifyitems)
    metafunc.parametrize("engine", engines, indirect=True, scope="module")


#: (tests collected on PostgreSQL, tests of both_engines modules marked sqlite_only)
ENGINE_COUNTS = pytest.StashKey[tuple[int, int]]()


@pytest.hookimpl(trylast=True)  # after -k and -m deselected what does not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def on_postgresql(item: pytest.Item) -> bool:
        spec = getattr(item, "callspec", None)
        return (
            item.get_closest_marker("both_engines") is not None
            and spec is not None
            and spec.params.get("engine") == "postgresql"
        )

    if config.getoption("engine") == "postgresql":
        # the PostgreSQL half alone (make test runs it beside the SQLite half)
        kept = [i for i in items if on_postgresql(i)]
        config.hook.pytest_deselected(items=[i for i in items if not on_postgresql(i)])
        items[:] = kept
    on_pg = sum(1 for i in items if on_postgresql(i))
    only = sum(
        1 for i in items
        if i.get_closest_marker("both_engines") and i.get_closest_marker("sqlite_only")
    )  # fmt: skip
    config.stash[ENGINE_COUNTS] = (on_pg, only)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line on what ran on which engine, so that nothing is left out unseen."""
    on_pg, only = config.stash.get(ENGINE_COUNTS, (0, 0))
    said = []
    if on_pg:
        said.append(f"{on_pg} tests of both_engines modules ran on PostgreSQL")
    if only:
        said.append(f"{only} of theirs are sqlite_only (each mark says why)")
    if said:
        terminalreporter.write_line("engines: " + "; ".join(said))


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> str:
    """The storage engine of this test's daemons: ``sqlite`` unless the module is marked
    ``both_engines`` (then parametrized, see the module docstring)."""
    return str(getattr(request, "param", "sqlite"))


class EngineDatabases:
    """Fresh databases for daemons on ``engine``: "" (a SQLite file in the data dir)
    on SQLite, on PostgreSQL a new database on the session's server, dropped by
    :meth:`drop_all` (after the daemons stopped)."""

    def __init__(self, request: pytest.FixtureRequest, engine: str) -> None:
        self.request = request
        self.engine = engine
        self.made: list[str] = []

    def new(self) -> str:
        if self.engine == "sqlite":
            return ""
        server: PgServer = self.request.getfixturevalue("pg_server")
        url = server.create_database(template=self.request.getfixturevalue("pg_schema_template"))
        self.made.append(url)
        return url

    def drop_all(self) -> None:
        if not self.made:
            return
        server: PgServer = self.request.getfixturevalue("pg_server")
        while self.made:
            server.drop_database(self.made.pop())


def pg_rows(database_url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """The rows ``query`` returns on a daemon's PostgreSQL database (a connection of
    its own, beside the running daemon; the tests' counterpart of opening its SQLite
    file read-only)."""
    with connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:  # fmt: skip
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}") from last_exc


#: One TLS context for the suite's own clients. httpx builds a new one for every
#: client it makes (certifi's bundle: ~30 ms of CPU each), and the readiness probe
#: below alone made ~60 per daemon start: more CPU than the daemon's own start.
TLS = ssl.create_default_context(cafile=certifi.where())
#: the client that asks a starting daemon for /healthz (one for the whole session)
_PROBE = httpx.Client(timeout=1, verify=TLS)


@dataclass
class Daemon:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    #: what runs ``notifyd`` (e.g. tests/faultinject.py, which patches it first)
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "notifyd"])
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    #: ``--database-url`` (e.g. the ``pg_database`` fixture's URL); "" = SQLite in data_dir
    database_url: str = ""
    #: ``--node-name``; "" = the daemon's default (host name and pid)
    node_name: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self) -> str:
        """The storage engine this daemon runs on: ``sqlite`` or ``postgresql``."""
        return "postgresql" if self.database_url.startswith("postgres") else "sqlite"

    @property
    def socket(self) -> Path:
        return self.data_dir / "notifyd.sock"

    def start(self, timeout: float = 20.0) -> Daemon:
        # the tests' push services listen on 127.0.0.1
        env = {**os.environ, "NOTIFYD_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "true", **self.extra_env}
        for var in (
            "NOTIFYD_URL",
            "NOTIFYD_TOKEN",
            "NOTIFYD_SOCKET",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
        ):
            if var not in self.extra_env:
                env.pop(var, None)
        self.log_path = self.data_dir / "daemon.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        cluster_args = []
        if self.database_url:
            cluster_args += ["--database-url", self.database_url]
        if self.node_name:
            cluster_args += ["--node-name", self.node_name]
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}", "--socket", str(self.socket), *cluster_args,
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return (
                _PROBE.get(self.url + "/healthz", headers={"Connection": "close"}).status_code
                == 200
                and self.socket.exists()
            )

        try:
            wait_for(ready, timeout, message="daemon to serve /healthz")
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        return self

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace")
            if self.log_path and self.log_path.exists()
            else ""
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("daemon did not stop in time") from None
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> Daemon:
        self.stop()
        return self.start()

    # clients -------------------------------------------------------------------

    def admin(self, **kw: Any) -> httpx.Client:
        """A client over the Unix socket: acts as the admin user."""
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket), verify=TLS),
            base_url="http://notifyd",
            timeout=kw.pop("timeout", 10), **kw,
        )  # fmt: skip

    def http(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kw.setdefault("verify", TLS)
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 10), **kw)

    def user(self, name: str, *, role: str = "user", grants: dict[str, str] | None = None,
             scopes: list[str] | None = None, topics: str | None = None) -> str:  # fmt: skip
        """Create a user with ACL grants; return a token for it."""
        with self.admin() as c:
            r = c.post("/v1/users", json={"name": name, "role": role})
            assert r.status_code in (201, 409), r.text
            for pattern, perm in (grants or {}).items():
                r = c.post("/v1/acl", json={"user": name, "pattern": pattern, "permission": perm})
                assert r.status_code == 201, r.text
            body: dict[str, Any] = {"user": name}
            if scopes is not None:
                body["scopes"] = scopes
            if topics is not None:
                body["topics"] = topics
            r = c.post("/v1/tokens", json=body)
            assert r.status_code == 201, r.text
            return r.json()["token"]

    def publish(self, topic: str = "test", **fields: Any) -> dict:
        fields.setdefault("title", "hello")
        with self.admin() as c:
            r = c.post("/v1/events", json={"topic": topic, **fields})
            assert r.status_code == 201, r.text
            return r.json()


@pytest.fixture
def daemon(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A started daemon on ``engine`` (SQLite unless the module runs on both)."""
    databases = EngineDatabases(request, engine)
    d = Daemon(tmp_path / "data", database_url=databases.new())
    d.data_dir.mkdir()
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        databases.drop_all()


@pytest.fixture
def make_daemon(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Daemon]]:
    """Unstarted daemons, each with a data dir and (on ``engine``) a database of its own;
    ``database_url=`` chooses one instead (e.g. nodes sharing ``pg_database``)."""
    started: list[Daemon] = []
    databases = EngineDatabases(request, engine)

    def make(**kw: Any) -> Daemon:
        if "database_url" not in kw:
            kw["database_url"] = databases.new()
        d = Daemon(tmp_path / f"data{len(started)}", **kw)
        d.data_dir.mkdir()
        started.append(d)
        return d

    try:
        yield make
    finally:
        for d in started:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        databases.drop_all()


# --- PostgreSQL (cluster mode) ---------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session: NOTIFYD_TEST_DATABASE_URL, else a private
    throwaway cluster (tests/pg.py). Never skipped: without a server, the tests that use
    it fail with the reason."""
    with contextlib.ExitStack() as stack:
        reason = ""
        try:
            server = stack.enter_context(pg_server_session())
        except PgUnavailable as exc:
            reason = str(exc)
        if reason:
            pytest.fail(reason, pytrace=False)
        yield server


@pytest.fixture(scope="session")
def pg_schema_template(pg_server: PgServer) -> str:
    """A template database with notifyd's schema migrated, for the ``both_engines``
    daemons (each database a copy: a daemon starting on it finds nothing to migrate,
    as on a cluster's second node). ``pg_database`` stays empty: the tests of the
    migrations themselves use that."""
    from notifyd.core.postgres.schema import migrate

    def prepare(url: str) -> None:
        with connect(url) as conn:
            migrate(conn)

    return pg_server.create_template(prepare)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh database of this test's own, dropped (WITH FORCE) afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def make_pg_node(pg_database: str, make_daemon: Callable[..., Daemon]) -> Callable[..., Daemon]:
    """Daemons (cluster nodes) on this test's PostgreSQL database, node-0, node-1, ...:
    ``make_pg_node().start()``. Each has its own data dir (socket, VAPID keys)."""
    count = 0

    def make(**kw: Any) -> Daemon:
        nonlocal count
        kw.setdefault("database_url", pg_database)
        kw.setdefault("node_name", f"node-{count}")
        count += 1
        return make_daemon(**kw)

    return make


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium for a test module (tests/browser.py has the helpers)."""
    from browser import launch
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()

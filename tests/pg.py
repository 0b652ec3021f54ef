"""A real PostgreSQL server for the tests (cluster mode, issue 15).

``NOTIFYD_TEST_DATABASE_URL`` names an existing server (any database on it; the
tests connect there as a superuser or a role with CREATEDB). When it is unset, the
session starts a private throwaway cluster: ``initdb`` into a temporary directory,
``pg_ctl start`` on a free 127.0.0.1 port with its Unix socket in that directory,
stopped and deleted at the end. initdb and postgres refuse to run as root, so as
root they run as the ``postgres`` system user (Debian's package creates it), else
as a dedicated unprivileged user created for the purpose.

The PostgreSQL tests are never skipped: when no server can be had,
:class:`PgUnavailable` says why and the tests that need one fail with that message.

Each test gets a database of its own (:meth:`PgServer.create_database`), copied
from a template made once per session, and dropped ``WITH (FORCE)`` afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ENV = "NOTIFYD_TEST_DATABASE_URL"
#: the unprivileged user created to run a private cluster as root when there is no
#: ``postgres`` user (a PostgreSQL not installed from Debian's package)
TEST_USER = "notifyd-pgtest"
#: per-test databases are named notifyd_t_<owner>_<random>, the session's template
#: notifyd_tpl_<owner>_<random>; <owner> is this process: <pid namespace>x<pid>
DB_PREFIX = "notifyd_t_"
TEMPLATE_PREFIX = "notifyd_tpl_"
#: private clusters live in <tmp>/notifyd-pg-<random>, with the owner in a file there
CLUSTER_PREFIX = "notifyd-pg-"


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _owner() -> str:
    return f"{_pid_namespace()}x{os.getpid()}"


CONNECT_TIMEOUT = 5


class PgUnavailable(Exception):
    """No PostgreSQL server could be had; the message says why and what to do."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``****`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        out = url
    else:
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        out = urlunsplit(parts._replace(netloc=f"{user}:****@{netloc[2]}"))
    return re.sub(r"(password=)[^&]*", r"\1****", out)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (every other part kept)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def connect(url: str, **kw: Any) -> psycopg.Connection[Any]:
    kw.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return psycopg.connect(url, autocommit=True, **kw)


# --- a private throwaway cluster ---------------------------------------------------


#: where Debian's postgresql-N packages put the server's programs
DEBIAN_BINS = ("/usr/lib/postgresql/*/bin",)


def find_pg_bin(globs: Sequence[str] = DEBIAN_BINS, path: str | None = None) -> Path | None:
    """The directory with ``initdb`` and ``pg_ctl``: Debian's /usr/lib/postgresql/N/bin
    (the newest N), else wherever ``path`` (default: PATH) has them."""
    candidates = sorted(
        (folder for pattern in globs for folder in glob.glob(pattern)),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in re.findall(r"\d+|\D+", p)],
        reverse=True,
    )
    for folder in candidates:
        if all(os.access(Path(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    initdb = shutil.which("initdb", path=path)
    if initdb:
        folder = Path(initdb).resolve().parent
        if os.access(folder / "pg_ctl", os.X_OK):
            return folder
    return None


@dataclass(frozen=True)
class RunAs:
    """Who runs initdb, pg_ctl and postgres: ourselves, or (as root) an unprivileged user."""

    uid: int
    gid: int
    name: str
    home: str

    @classmethod
    def choose(cls, names: Sequence[str] = ("postgres", TEST_USER)) -> RunAs:
        """Ourselves; as root, the first of ``names`` that exists, else a new system
        user ``TEST_USER`` (useradd)."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return cls(me.pw_uid, me.pw_gid, me.pw_name, me.pw_dir)
        for name in names:
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)
        useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
        if useradd is None:
            raise PgUnavailable(
                "initdb cannot run as root, there is no 'postgres' user and no useradd to "
                f"create {TEST_USER!r}: run the tests as an unprivileged user or set {ENV}"
            )
        done = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", TEST_USER],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode not in (0, 9):  # 9: created meanwhile by another run
            raise PgUnavailable(f"could not create the user {TEST_USER!r}: {done.stderr.strip()}")
        entry = pwd.getpwnam(TEST_USER)
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)

    @property
    def switches(self) -> bool:
        return self.uid != os.geteuid()

    def run(self, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, LANG="C.UTF-8")
        kw: dict[str, Any] = {}
        if self.switches:
            kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, **kw,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """A private PostgreSQL cluster in a temporary directory.

    ``PgCluster.create()`` runs initdb; :meth:`start` and :meth:`stop` may be called
    again (a test of a server that goes away and comes back at the same address);
    :meth:`destroy` stops it and deletes the directory.
    """

    base: Path
    bin_dir: Path
    run_as: RunAs
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(
        cls, bin_dir: Path | None = None, *, globs: Sequence[str] = DEBIAN_BINS,
        path: str | None = None, run_as: RunAs | None = None,
    ) -> PgCluster:  # fmt: skip
        """initdb a new cluster (not started). ``bin_dir`` is where initdb and pg_ctl
        are; by default :func:`find_pg_bin` looks for them (``globs``, then ``path``).
        ``run_as``: who runs the server (default :meth:`RunAs.choose`)."""
        bin_dir = bin_dir or find_pg_bin(globs, path)
        if bin_dir is None:
            raise PgUnavailable(
                f"{ENV} is unset and no PostgreSQL server binaries were found "
                "(initdb and pg_ctl, in /usr/lib/postgresql/*/bin or on PATH): install "
                "Debian's postgresql package (make test does, as root) or set "
                f"{ENV}=postgresql://USER@HOST:PORT/DB"
            )
        run_as = run_as or RunAs.choose()
        cls.remove_leftovers(bin_dir, run_as)
        base = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX))
        cluster = cls(base=base, bin_dir=bin_dir, run_as=run_as)
        try:
            (base / "owner").write_text(_owner())
            if run_as.switches:
                os.chown(base, run_as.uid, run_as.gid)
            cluster._initdb()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return cluster

    @classmethod
    def remove_leftovers(cls, bin_dir: Path, run_as: RunAs) -> list[Path]:
        """Stop and delete the clusters of earlier sessions that were killed before
        their teardown (their owner, a process of our pid namespace, is gone)."""
        removed = []
        for base in Path(tempfile.gettempdir()).glob(CLUSTER_PREFIX + "*"):
            try:
                namespace, _, pid = (base / "owner").read_text().partition("x")
            except OSError:
                continue
            if int(namespace or 0) != _pid_namespace() or Path(f"/proc/{pid}").exists():
                continue
            cls(base=base, bin_dir=bin_dir, run_as=run_as).destroy()
            removed.append(base)
        return removed

    def _initdb(self) -> None:
        common = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--no-sync"]  # fmt: skip
        done = self.run_as.run([*common, "--locale=C.UTF-8"], self.base, timeout=120)
        if done.returncode != 0 and "locale" in done.stderr.lower():
            shutil.rmtree(self.data, ignore_errors=True)
            done = self.run_as.run([*common, "--no-locale"], self.base, timeout=120)
        if done.returncode != 0:
            raise PgUnavailable(
                f"initdb ({self.bin_dir}) failed as user {self.run_as.name!r} "
                f"in {self.base}:\n{done.stdout}{done.stderr}"
            )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "200",
            # a throwaway cluster: a crash of the machine may lose it whole; a crash
            # or kill of the server alone loses nothing (the OS keeps the writes)
            "fsync": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# notifyd tests (tests/pg.py)\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self, timeout: float = 60.0) -> PgCluster:
        """Start the server; on a port taken meanwhile, try another. Returns self."""
        attempts = []
        for _ in range(3):
            port = self.port or _free_port()
            done = self.run_as.run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                 "-w", "-t", str(int(timeout)), "-o", f"-p {port}", "start"],
                self.base, timeout=timeout + 10,
            )  # fmt: skip
            if done.returncode == 0:
                self.port = port
                return self
            tail = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            attempts.append(f"port {port}: {done.stdout}{done.stderr}{tail}")
            if self.port or "could not bind" not in tail:
                break
        raise PgUnavailable(
            f"the private PostgreSQL cluster in {self.base} did not start "
            f"(pg_ctl of {self.bin_dir}, as {self.run_as.name!r}):\n" + "\n".join(attempts)
        )

    def running(self) -> bool:
        done = self.run_as.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"], self.base, timeout=30
        )
        return done.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``, or ``immediate`` for a crash)."""
        if not self.data.exists():
            return
        self.run_as.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            self.base, timeout=60,
        )  # fmt: skip

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# --- the server the tests use -------------------------------------------------------


@dataclass
class PgServer:
    """A reachable server: ``url`` connects as a role that may create databases."""

    url: str
    #: the private cluster, when this session started one
    cluster: PgCluster | None = None
    template: str = ""
    #: databases made here (dropped at close, if a test has not already)
    made: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        if self.cluster is not None:
            return f"private cluster in {self.cluster.base} on port {self.cluster.port}"
        return f"{ENV}={redact(self.url)}"

    def admin(self) -> psycopg.Connection[Any]:
        return connect(self.url)

    def setup(self) -> PgServer:
        """Check the server answers and make the session's template database."""
        try:
            with self.admin() as conn:
                conn.execute("SELECT 1")
                self._drop_leftovers(conn)
                self.template = f"{TEMPLATE_PREFIX}{_owner()}_{uuid.uuid4().hex[:8]}"
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(self.template)
                    )
                )
        except psycopg.Error as exc:
            raise PgUnavailable(
                f"no PostgreSQL server for the tests: {self.source} cannot be used: "
                f"{str(exc).strip()}"
            ) from None
        return self

    def _drop_leftovers(self, conn: psycopg.Connection[Any]) -> None:
        """Databases of earlier runs on this machine that died before dropping them:
        named by a process of our pid namespace that no longer exists, and unused."""
        host = urlsplit(self.url).hostname
        namespace = _pid_namespace()
        if host not in (None, "", "127.0.0.1", "localhost", "::1") or not namespace:
            return  # a server others may use: their processes are not ours to judge
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'notifyd\\_t%' AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = pg_database.datname)"
        ).fetchall()
        for (name,) in rows:
            found = re.fullmatch(rf"(?:{DB_PREFIX}|{TEMPLATE_PREFIX})(\d+)x(\d+)_[0-9a-f]+", name)
            if found and int(found[1]) == namespace and not Path(f"/proc/{found[2]}").exists():
                with contextlib.suppress(psycopg.Error):
                    self._drop(conn, name)

    @staticmethod
    def _drop(conn: psycopg.Connection[Any], name: str) -> None:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def create_database(self, template: str = "") -> str:
        """A fresh database, a copy of ``template`` (default: the session's empty one,
        or one made by :meth:`create_template`); returns its URL."""
        name = f"{DB_PREFIX}{_owner()}_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template or self.template or "template0")
                )
            )
        self.made.append(name)
        return with_database(self.url, name)

    def create_template(self, prepare: Callable[[str], object]) -> str:
        """A database made once and then copied by ``create_database(template=NAME)``,
        e.g. with the schema migrated: ``prepare(url)`` fills it and must close its
        connections (PostgreSQL copies no database that is in use). Returns NAME; it is
        dropped at the end of the session."""
        url = self.create_database()
        prepare(url)
        return database_of(url)

    def drop_database(self, url_or_name: str) -> None:
        name = database_of(url_or_name) if "://" in url_or_name else url_or_name
        with self.admin() as conn:
            self._drop(conn, name)
        if name in self.made:
            self.made.remove(name)

    def database_exists(self, url_or_name: str) -> bool:
        name = database_of(url_or_name) if "://" in url_or_name else url_or_name
        with self.admin() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        return row is not None

    def close(self) -> None:
        try:
            if self.cluster is None:
                with contextlib.suppress(psycopg.Error), self.admin() as conn:
                    for name in [*self.made, self.template]:
                        if name:
                            self._drop(conn, name)
        finally:
            if self.cluster is not None:
                self.cluster.destroy()


@contextlib.contextmanager
def pg_server_session(
    environ: Mapping[str, str] | None = None, globs: Sequence[str] = DEBIAN_BINS
) -> Iterator[PgServer]:
    """The server for a test session: ``NOTIFYD_TEST_DATABASE_URL`` in ``environ``
    (default: os.environ), else a private cluster started here (initdb from ``globs`` or
    ``environ``'s PATH) and destroyed on exit. Raises :class:`PgUnavailable`."""
    env = os.environ if environ is None else environ
    url = env.get(ENV, "").strip()
    if url:
        server = PgServer(url)
    else:
        cluster = PgCluster.create(globs=globs, path=env.get("PATH", os.defpath))
        try:
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        server = PgServer(cluster.url, cluster=cluster)
    try:
        server.setup()
        yield server
    finally:
        server.close()

"""Daemon configuration: ``notifyd.toml``, then command-line flags, then ``NOTIFYD_*``
environment variables, each overriding the one before.

Every key is listed in :data:`DEFAULTS` and documented in the sample
``notifyd.toml``; an unknown key or a bad value stops start-up with a message that
names the key and its line.

This module is part of the headless core; the CLI and the other front ends import
the same names from :mod:`notifyd.config`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class ConfigError(Exception):
    pass


#: what ``node_name`` may be: it appears in logs, /healthz, /metrics labels
NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def default_node_name() -> str:
    """``<host name>-<pid>``, cut to 64 characters, characters outside ``NODE_NAME``
    replaced by ``-``: unique among the nodes of a cluster while host names are."""
    pid = str(os.getpid())
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "node"
    return f"{host[: 63 - len(pid)]}-{pid}"


@dataclass
class Config:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:8780"])
    socket: str = ""  # "" = <data_dir>/notifyd.sock; "none" = no socket
    socket_mode: str = "0660"
    socket_user: str = "admin"
    data_dir: str = "var"
    #: "" = SQLite in data_dir; sqlite:///ABSOLUTE/PATH; postgresql://… (cluster mode)
    database_url: str = ""
    #: a file holding the database password (used instead of one in database_url)
    database_password_file: str = ""
    #: this node's name in logs, /healthz and /metrics; "" = default_node_name()
    node_name: str = field(default_factory=default_node_name)
    base_url: str = ""
    log_level: str = "info"
    synchronous: str = "full"
    retention_days: int = 30
    max_request_bytes: int = 8 * 1024 * 1024
    max_batch_events: int = 5000
    publish_rate: float = 200.0  # events/s per token, sustained; 0 = no limit
    publish_burst: int = 5000
    max_channels_per_user: int = 100
    max_streams_per_user: int = 500
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    stream_queue: int = 2000
    keepalive_seconds: float = 25.0
    ntfy_keepalive_seconds: float = 45.0
    stream_send_timeout: float = 10.0
    replay_page: int = 1000
    graceful_timeout: float = 10.0
    keep_alive_timeout: float = 30.0
    readers: int = 4
    plugins: list[str] = field(default_factory=list)
    delivery_process: bool = True
    vapid_subject: str = "mailto:notifyd@localhost"
    webpush_allow_private_endpoints: bool = False  # alias: true = private_destinations "everyone"
    private_destinations: str = "admins"  # admins | everyone | nobody
    trusted_proxies: list[str] = field(default_factory=list)  # CIDRs whose X-Forwarded-For counts
    delivery_max_attempts: int = 8
    delivery_backoff_seconds: float = 5.0
    delivery_backoff_max_seconds: float = 3600.0
    session_days: float = 30.0
    # -- identity from the application (docs/embedding.md) --
    #: the ``iss`` every accepted JWT carries; "" = JWTs are not accepted
    jwt_issuer: str = ""
    #: the ``aud`` every accepted JWT must name
    jwt_audience: str = ""
    #: where the issuer's signing keys are (one of the three)
    jwt_jwks_url: str = ""
    jwt_public_key_file: str = ""
    jwt_secret_file: str = ""  # HS256 shared secret
    jwt_user_claim: str = "sub"
    jwt_grants_claim: str = "notifyd"
    jwt_groups_claim: str = "groups"
    jwt_leeway_seconds: float = 30.0
    #: users first seen through a JWT, OIDC or the proxy header are created
    auto_create_users: bool = True
    #: grants every user holds, "PATTERN:read|write|rw", ``{user}`` = the user's name
    default_grants: list[str] = field(default_factory=list)
    #: group name → grants ("PATTERN:PERM") its members hold
    group_grants: dict[str, list[str]] = field(default_factory=dict)
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email"])
    oidc_user_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_button_label: str = "single sign-on"
    #: false: the sign-in page offers only single sign-on, and passwords are refused there
    password_login: bool = True
    #: a header naming the user, believed only from ``trusted_proxies`` (e.g. Remote-User)
    proxy_user_header: str = ""
    proxy_groups_header: str = ""
    #: origins (scheme://host[:port]) whose pages may call the API with bearer credentials
    cors_origins: list[str] = field(default_factory=list)
    # -- native mobile push (docs/mobile.md) --
    #: the Firebase service account's JSON key; "" = no FCM
    fcm_service_account_file: str = ""
    fcm_endpoint: str = "https://fcm.googleapis.com"
    #: the APNs signing key (.p8) and its identifiers; "" = no APNs
    apns_key_file: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""  # the app's bundle id
    apns_environment: str = "production"  # production | sandbox
    apns_endpoint: str = ""  # "" = Apple's, per apns_environment
    #: an ntfy server that wakes the ntfy iOS app (e.g. https://ntfy.sh); "" = none
    upstream_base_url: str = ""
    upstream_access_token: str = ""
    # -- integrations: attachments (docs/integrations.md) --
    #: the largest file one upload may carry; 0 = uploads are refused
    attachment_max_bytes: int = 15 * 1024 * 1024
    #: what one user's attachments may hold at once; 0 = no per-user limit
    attachment_user_quota_bytes: int = 100 * 1024 * 1024
    #: how long an uploaded file is kept: a duration such as "3d", "12h", "90m" or seconds
    attachment_expiry: str = "3d"

    @property
    def attachment_expiry_seconds(self) -> float:
        """``attachment_expiry`` in seconds (checked at load by :func:`parse_duration`)."""
        return parse_duration(self.attachment_expiry)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def db_path(self) -> Path:
        """The SQLite database file: ``sqlite:///PATH`` in ``database_url``, else
        ``<data_dir>/notifyd.db``."""
        if self.database_url.startswith(SQLITE_URL):
            return Path(self.database_url[len(SQLITE_URL) - 1 :])
        return self.data_path / "notifyd.db"

    def database_password(self) -> str | None:
        """The password in ``database_password_file`` (read now, so that a rotated file
        counts at the next connection), without its trailing newline; ``None`` when the
        key is empty (then a password, if any, is in ``database_url``).

        Raises:
            ConfigError: the file cannot be read or is empty. The message names the
                file, never its content.
        """
        if not self.database_password_file:
            return None
        path = Path(self.database_password_file)
        try:
            password = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"database_password_file: cannot read {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"database_password_file: {path} is not UTF-8 text") from None
        for ending in ("\r\n", "\n"):
            if password.endswith(ending):
                password = password[: -len(ending)]
                break
        if not password:
            raise ConfigError(f"database_password_file: {path} is empty")
        return password

    @property
    def destination_policy(self) -> str:
        """Who may make the daemon connect to loopback/private/reserved addresses:
        ``admins`` (and the socket), ``everyone`` or ``nobody``. The old key
        ``webpush_allow_private_endpoints = true`` still means ``everyone``."""
        if self.webpush_allow_private_endpoints:
            return "everyone"
        return self.private_destinations.lower()

    @property
    def socket_path(self) -> Path | None:
        if self.socket.lower() == "none":
            return None
        return Path(self.socket) if self.socket else self.data_path / "notifyd.sock"


SQLITE_URL = "sqlite:///"


def url_has_password(url: str) -> bool:
    """Whether ``url`` carries a password (``user:password@`` or ``?password=``)."""
    try:
        parts = urlsplit(url)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """``url`` as it may appear in logs and messages: a password replaced by ``****``."""
    url = re.sub(r"(?<=://)([^/@:\s]*):[^/@\s]*@", r"\1:****@", url)
    return re.sub(r"(?i)([?&]password=)[^&\s]*", r"\1****", url)


def database_engine(url: str) -> str:
    """The engine ``database_url`` names: ``sqlite`` (empty, or
    ``sqlite:///ABSOLUTE/PATH``). The message of the :class:`ConfigError` for
    anything else never repeats the URL (it may hold a password).

    Raises:
        ConfigError: an engine this version cannot open, or a malformed URL.
    """
    if url == "":
        return "sqlite"
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        path = url[len(SQLITE_URL) - 1 :]
        if not url.startswith(SQLITE_URL) or len(path) < 2 or "?" in url or path.endswith("/"):
            raise ConfigError(
                "database_url: an SQLite URL is sqlite:///ABSOLUTE/PATH (three slashes, "
                "then the file's absolute path, e.g. sqlite:///var/lib/notifyd/notifyd.db)"
            )
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        if not url.lower().startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "database_url: a PostgreSQL URL is postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME "
                "(libpq options such as ?sslmode=require may follow)"
            )
        return "postgresql"
    raise ConfigError(
        f"database_url: unknown scheme {scheme[:20]!r}: leave it empty (SQLite in data_dir), "
        "use sqlite:///ABSOLUTE/PATH, or postgresql://USER@HOST:PORT/DBNAME (cluster mode)"
    )


DEFAULTS = Config()
KEYS = {f.name: f for f in fields(Config)}
LOG_LEVELS = ("debug", "info", "warning", "error")
PRIVATE_DESTINATIONS = ("admins", "everyone", "nobody")


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = type(getattr(DEFAULTS, key))
    try:
        if kind is dict:
            if isinstance(value, str):  # an environment variable or flag: JSON
                value = json.loads(value)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in value.items()
            ):
                raise ValueError("expected a table of lists of strings")
            return value
        if kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return value
        if kind is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key} = {value!r}: {exc}") from None


#: a duration setting: a number and a unit (s, m, h, d, w), or seconds alone
DURATION = re.compile(r"^\s*(?P<n>[0-9]{1,9}(?:\.[0-9]{1,6})?)\s*(?P<unit>[smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``"3d"``, ``"12h"``, ``"90m"``, ``"45s"`` or ``"3600"`` in seconds; ValueError
    for anything else (negative numbers, other units, more than 10 years)."""
    match = DURATION.fullmatch(text)
    if match is None:
        raise ValueError("must be a duration: a number and s, m, h, d or w (e.g. 3d, 12h)")
    seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
    if seconds > 10 * 365 * 86400:
        raise ValueError("must be at most 10 years")
    return seconds


def _validate(cfg: Config) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{key} = {getattr(cfg, key)!r}: {why}")

    for addr in cfg.listen:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise bad("listen", f"{addr!r} is not HOST:PORT")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    if not cfg.node_name:
        cfg.node_name = default_node_name()
    if not NODE_NAME.fullmatch(cfg.node_name):
        raise bad("node_name", "must be 1-64 letters, digits, '.', '_' or '-'")
    if cfg.database_password_file:
        if url_has_password(cfg.database_url):
            raise ConfigError(
                "database_url carries a password and database_password_file is set: "
                "keep the password in one place (the file; take it out of the URL)"
            )
        cfg.database_password()  # readable and not empty, or a ConfigError
    database_engine(cfg.database_url)
    if cfg.synchronous.lower() not in ("full", "normal", "extra"):
        raise bad("synchronous", "must be full, normal or extra")
    if not re.fullmatch(r"0?[0-7]{3}", cfg.socket_mode):
        raise bad("socket_mode", "must be an octal mode such as 0660")
    if cfg.private_destinations.lower() not in PRIVATE_DESTINATIONS:
        raise bad("private_destinations", f"must be one of {', '.join(PRIVATE_DESTINATIONS)}")
    for cidr in cfg.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise bad("trusted_proxies", f"{cidr!r} is not an IP address or CIDR network") from None
    if cfg.publish_rate < 0:
        raise bad("publish_rate", "must be 0 (no limit) or positive")
    if cfg.retention_days < 1:
        raise bad("retention_days", "must be at least 1")
    if not cfg.vapid_subject.startswith(("mailto:", "https://")):
        raise bad("vapid_subject", "must be a mailto: or https:// URL (push services contact it)")
    for key in ("max_request_bytes", "max_batch_events", "stream_queue", "replay_page", "readers",
                "delivery_max_attempts", "publish_burst", "max_channels_per_user",
                "max_streams_per_user"):  # fmt: skip
        if getattr(cfg, key) < 1:
            raise bad(key, "must be positive")
    for key in ("keepalive_seconds", "ntfy_keepalive_seconds", "stream_send_timeout",
                "graceful_timeout", "keep_alive_timeout", "delivery_backoff_seconds",
                "delivery_backoff_max_seconds", "session_days", "header_timeout",
                "body_timeout"):  # fmt: skip
        if getattr(cfg, key) <= 0:
            raise bad(key, "must be positive")
    _validate_identity(cfg, bad)
    _validate_attachments(cfg, bad)


#: a grant in settings: ``PATTERN:PERM``
GRANT_SETTING = re.compile(r"^(?P<pattern>[^:\s]+):(?P<perm>read|write|rw)$")
#: an HTTP header name (RFC 9110 token)
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


def is_local_http(url: str) -> bool:
    """``http://`` to a loopback host: allowed besides ``https://`` for the JWKS and
    OpenID provider URLs (a provider on the same machine, and the test suite)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _https_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (parts.scheme == "https" and bool(parts.hostname)) or is_local_http(url)


def _validate_identity(cfg: Config, bad: Any) -> None:
    keys = [
        k for k in ("jwt_jwks_url", "jwt_public_key_file", "jwt_secret_file") if getattr(cfg, k)
    ]
    if len(keys) > 1:
        raise ConfigError(f"{' and '.join(keys)} are both set: the issuer's keys come from one")
    if keys and not (cfg.jwt_issuer and cfg.jwt_audience):
        raise ConfigError(
            f"{keys[0]} is set: set jwt_issuer and jwt_audience too (every token's iss and "
            "aud are checked)"
        )
    if cfg.jwt_issuer and not keys:
        raise bad(
            "jwt_issuer",
            "needs the issuer's keys: jwt_jwks_url, jwt_public_key_file or jwt_secret_file",
        )
    if cfg.jwt_issuer and not cfg.jwt_audience:
        raise bad("jwt_issuer", "needs jwt_audience too (every token's aud is checked)")
    for key in ("jwt_public_key_file", "jwt_secret_file"):
        if getattr(cfg, key):
            from .jwt import KeyFileError, load_key_file  # lazily: joserfc only when used

            try:
                load_key_file(getattr(cfg, key), secret=key == "jwt_secret_file")
            except KeyFileError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    if cfg.jwt_jwks_url and not _https_url(cfg.jwt_jwks_url):
        raise bad("jwt_jwks_url", "must be an https:// URL (http:// only to localhost)")
    if not 0 <= cfg.jwt_leeway_seconds <= 600:
        raise bad("jwt_leeway_seconds", "must be between 0 and 600")
    for key in ("jwt_user_claim", "jwt_grants_claim", "jwt_groups_claim", "oidc_user_claim",
                "oidc_groups_claim"):  # fmt: skip
        if not getattr(cfg, key) or len(getattr(cfg, key)) > 200:
            raise bad(key, "must name a claim")
    from .identity import parse_grant  # lazily: identity imports the models

    for group, grants in [("", cfg.default_grants), *cfg.group_grants.items()]:
        for grant in grants:
            try:
                parse_grant(grant)
            except ValueError as exc:
                where = f"group_grants.{group}" if group else "default_grants"
                raise ConfigError(f"{where} = {grant!r}: {exc}") from None
    for grant in cfg.default_grants:
        if not GRANT_SETTING.match(grant):
            raise bad(
                "default_grants", f"{grant!r} is not PATTERN:read, PATTERN:write or PATTERN:rw"
            )
    for group, grants in cfg.group_grants.items():
        for grant in grants:
            if not GRANT_SETTING.match(grant):
                raise ConfigError(
                    f"group_grants.{group} = {grant!r}: not PATTERN:read, PATTERN:write "
                    "or PATTERN:rw"
                )
    if cfg.oidc_issuer:
        if not _https_url(cfg.oidc_issuer):
            raise bad("oidc_issuer", "must be an https:// URL (http:// only to localhost)")
        if not cfg.oidc_client_id:
            raise bad("oidc_issuer", "needs oidc_client_id too")
        if "openid" not in cfg.oidc_scopes:
            raise bad("oidc_scopes", "must include 'openid'")
    elif cfg.oidc_client_id or cfg.oidc_client_secret_file:
        raise ConfigError("oidc_client_id/oidc_client_secret_file are set: set oidc_issuer too")
    if not 1 <= len(cfg.oidc_button_label) <= 64:
        raise bad("oidc_button_label", "must be 1-64 characters")
    for key in ("proxy_user_header", "proxy_groups_header"):
        if getattr(cfg, key) and not HEADER_NAME.match(getattr(cfg, key)):
            raise bad(key, "must be an HTTP header name such as Remote-User")
    if cfg.proxy_groups_header and not cfg.proxy_user_header:
        raise bad("proxy_groups_header", "needs proxy_user_header too")
    if cfg.proxy_user_header and not cfg.trusted_proxies:
        raise bad(
            "proxy_user_header",
            "is believed only from trusted_proxies: list the proxy's address there",
        )
    _validate_mobile(cfg, bad)
    for origin in cfg.cors_origins:
        try:
            parts = urlsplit(origin)
            ok = (
                parts.scheme in ("http", "https")
                and bool(parts.hostname)
                and parts.path == ""
                and not parts.query
                and not parts.fragment
                and "@" not in parts.netloc
            )
        except ValueError:
            ok = False
        if not ok:
            raise bad(
                "cors_origins",
                f"{origin!r} is not an origin: scheme://host[:port], no path (no '*' either)",
            )


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective configuration. Raises :class:`ConfigError`."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        for key, value in data.items():
            line = _line_of(text, key)
            where = f"{p}:{line}" if line else str(p)
            if key not in KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (see notifyd.toml for the keys)")
            setattr(cfg, key, _coerce(key, value, where))
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(cfg, key, _coerce(key, value, "command line"))
    env = os.environ if environ is None else environ
    for key in KEYS:
        name = "NOTIFYD_" + key.upper()
        if name in env:
            setattr(cfg, key, _coerce(key, env[name], f"environment {name}"))
    _validate(cfg)
    return cfg


def _validate_mobile(cfg: Config, bad: Any) -> None:
    for key in ("fcm_endpoint", "apns_endpoint", "upstream_base_url"):
        url = getattr(cfg, key)
        if url and not _https_url(url):
            raise bad(key, "must be an https:// URL (http:// only to localhost)")
    if cfg.apns_environment not in ("production", "sandbox"):
        raise bad("apns_environment", "must be production or sandbox")
    apns = ("apns_key_file", "apns_key_id", "apns_team_id", "apns_topic")
    given = [k for k in apns if getattr(cfg, k)]
    if given and len(given) != len(apns):
        missing = ", ".join(k for k in apns if not getattr(cfg, k))
        raise ConfigError(f"{given[0]} is set: APNs needs {missing} too")
    if cfg.upstream_base_url and not cfg.base_url:
        raise bad(
            "upstream_base_url",
            "needs base_url (the upstream is told a hash of base_url and the topic)",
        )
    if cfg.upstream_access_token and not cfg.upstream_base_url:
        raise bad("upstream_access_token", "is set without upstream_base_url")


def _validate_attachments(cfg: Config, bad: Any) -> None:
    for key in ("attachment_max_bytes", "attachment_user_quota_bytes"):
        if getattr(cfg, key) < 0:
            raise bad(key, "must be 0 or positive")
    try:
        seconds = parse_duration(cfg.attachment_expiry)
    except ValueError as exc:
        raise bad("attachment_expiry", str(exc)) from None
    if seconds < 60:
        raise bad("attachment_expiry", "must be at least one minute")

"""The daemon's VAPID key pair (RFC 8292): created once, kept private, used to sign.

The private key lives in ``<data_dir>/vapid_private.pem`` (PKCS#8 PEM, mode 0600).
Browsers bind every push subscription to the public key they were given, so the
key must survive restarts: losing it silently orphans every subscription.

``notifyd import`` may put another key in place (the key of the installation being
moved here, so that its subscriptions keep working): the file is then replaced
(renamed over), and :func:`load_or_create` and :class:`VapidSigner` notice the
new file (another inode or mtime) on their next use, in every process.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

log = logging.getLogger("notifyd.webpush")

KEY_FILE = "vapid_private.pem"
#: Push services reject tokens that expire more than 24 h ahead; stay well inside.
TOKEN_LIFETIME = 12 * 3600
#: Re-sign a cached token once it has less than this left, so that a token is
#: never close to expiry when it reaches the push service.
TOKEN_MIN_REMAINING = 6 * 3600

_lock = threading.Lock()
#: per key file: the key and the file it was read from (inode, mtime, size)
_keys: dict[Path, tuple[ec.EllipticCurvePrivateKey, tuple[int, int, int] | None]] = {}


def b64url(data: bytes) -> str:
    """Base64url without padding, as Web Push uses everywhere."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _write_new_key(path: Path) -> None:
    """Create ``path`` holding a fresh P-256 key, readable by the owner only.

    The key is written to a temporary file opened with mode 0600 (never wider,
    whatever the umask), synced, then hard-linked into place: the link fails if
    another process won the race, and a crash never leaves a half-written key
    under the real name.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask only narrows; this pins it for odd filesystems
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %04o); narrowing it to 0600", path, mode)
        os.chmod(path, 0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} does not hold a P-256 private key")
    return key


def load_or_create(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key of the daemon whose data lives in ``data_dir``.

    Creates the key on first use. Cached per data directory, so routes and the
    channel share one key without reading the file on every request; the file is
    read again when it was replaced (an import), which costs one ``stat`` per call.
    A key file removed while the daemon runs is not recreated: the cached key stays.

    Raises:
        OSError: the data directory is not writable (first start) or the key file
            is unreadable.
        ValueError: the file holds something other than a P-256 private key.
    """
    path = (Path(data_dir) / KEY_FILE).absolute()
    with _lock:
        cached = _keys.get(path)
        seen = _file_identity(path)
        if cached is not None and (seen is None or seen == cached[1]):
            return cached[0]
        if seen is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_new_key(path)
            log.info("created the Web Push (VAPID) key pair in %s", path)
            seen = _file_identity(path)
        key = _read_key(path)
        if cached is not None:
            log.info("the Web Push (VAPID) key in %s was replaced; using the new one", path)
        _keys[path] = (key, seen)
        return key


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers want it for ``applicationServerKey``: the
    uncompressed point (65 bytes), base64url without padding (87 characters)."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


class VapidSigner:
    """Signs VAPID ``Authorization`` headers, reusing a token per push service.

    Push services accept one token for many requests, and a browser population
    clusters on a handful of services (FCM, Mozilla, Apple), so caching per
    audience turns one ECDSA signature per push into one per service per hours.

    Args:
        key: the daemon's VAPID private key.
        subject: the operator contact (``mailto:`` or ``https:``) sent as ``sub``.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        # no-strict: the config already checked the scheme; py-vapid's own e-mail
        # regex rejects valid addresses such as mailto:ops@intranet
        self._vapid = Vapid02(key, conf={"no-strict": True})
        self._key = key
        self._subject = subject
        self._cache: dict[str, tuple[str, float]] = {}
        # the data directory the key came from (load_or_create), to follow a key
        # that an import replaces; None for a key from elsewhere (it stays)
        with _lock:
            self._dir = next((p.parent for p, (k, _) in _keys.items() if k is key), None)

    def _follow_key_file(self) -> None:
        """Sign with the data directory's current key (an import may replace it)."""
        if self._dir is None:
            return
        try:
            key = load_or_create(self._dir)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the Web Push key again (%s); keeping the one in use", exc)
            return
        if key is not self._key:
            self._key = key
            self._vapid = Vapid02(key, conf={"no-strict": True})
            self._cache.clear()

    def authorization(self, audience: str, now: float | None = None) -> str:
        """The ``Authorization`` header value (``vapid t=…,k=…``) for a push
        service origin such as ``https://fcm.googleapis.com``."""
        now = time.time() if now is None else now
        self._follow_key_file()
        hit = self._cache.get(audience)
        if hit is not None and hit[1] - now > TOKEN_MIN_REMAINING:
            return hit[0]
        exp = int(now) + TOKEN_LIFETIME
        header = self._vapid.sign({"aud": audience, "exp": exp, "sub": self._subject})
        value = header["Authorization"]
        if len(self._cache) > 1000:  # endpoints are user input: bound the cache
            self._cache.clear()
        self._cache[audience] = (value, exp)
        return value

"""The daemon's VAPID key pair (RFC 8292): created once, kept private, used to sign.

The private key lives in ``<data_dir>/vapid_private.pem`` (PKCS#8 PEM, mode 0600).
Browsers bind every push subscription to the public key they were given, so the
key must survive restarts: losing it silently orphans every subscription.
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
_keys: dict[Path, ec.EllipticCurvePrivateKey] = {}


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
    channel share one key without reading the file on every request.

    Raises:
        OSError: the data directory is not writable (first start) or the key file
            is unreadable.
        ValueError: the file holds something other than a P-256 private key.
    """
    path = (Path(data_dir) / KEY_FILE).absolute()
    with _lock:
        key = _keys.get(path)
        if key is None:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_new_key(path)
                log.info("created the Web Push (VAPID) key pair in %s", path)
            key = _keys[path] = _read_key(path)
        return key


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
        self._subject = subject
        self._cache: dict[str, tuple[str, float]] = {}

    def authorization(self, audience: str, now: float | None = None) -> str:
        """The ``Authorization`` header value (``vapid t=…,k=…``) for a push
        service origin such as ``https://fcm.googleapis.com``."""
        now = time.time() if now is None else now
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

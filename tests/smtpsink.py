"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, recording every message.

It can be stopped and started again on the same port, to play a mail server that
is down for a while. With ``credentials`` it offers AUTH (PLAIN/LOGIN, no TLS) and
accepts only that user and password, so a URL's password really gets used.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None

    @property
    def subject(self) -> str:
        return str(self.message["subject"] or "")

    def text(self) -> str:
        """Every text part (plain and HTML) of the message, decoded."""
        parts = [p for p in self.message.walk() if p.get_content_maintype() == "text"]
        return "\n".join(str(p.get_content()) for p in parts)


class SMTPSink:
    """An SMTP server that stores what it receives in :attr:`messages`.

    ``start()``/``stop()`` may be called repeatedly; the port stays the same.
    """

    def __init__(self, port: int | None = None, credentials: tuple[str, str] | None = None):
        self.port = port or free_port()
        self.credentials = credentials
        self.messages: list[Received] = []
        self.failed_logins = 0
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    # aiosmtpd handler hooks ------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        with self._lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, login)
            )
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:  # fmt: skip
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        if not ok:
            self.failed_logins += 1
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # control ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SMTPSink:
        assert self._controller is None, "already running"
        auth: dict[str, Any] = {}
        if self.credentials is not None:
            # Plain-text AUTH is fine on loopback; aiosmtpd refuses it without this.
            auth = {"authenticator": self._authenticate, "auth_require_tls": False}
        controller = Controller(self, hostname="127.0.0.1", port=self.port, **auth)
        try:
            controller.start()
        except BaseException:
            controller.loop.close()
            raise
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
            # Controller makes its own loop and leaves it open.
            controller.loop.close()

    def url(self, to: str = "alice@example.com", sender: str = "notifyd@example.com") -> str:
        """The Apprise URL for this server: plain SMTP (mailto://, not mailtos://),
        with the credentials when it has some."""
        auth = "{}:{}@".format(*self.credentials) if self.credentials else ""
        return f"mailto://{auth}127.0.0.1:{self.port}/{to}?from={sender}"

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {count} mail(s); got {len(self.messages)}")

"""Outgoing email over SMTP with the standard library.

`SMTP_URL` is `smtp://[user:pass@]host[:587]` (STARTTLS whenever the server offers it, and
required before any password is sent) or `smtps://[user:pass@]host[:465]` (TLS from the first
byte). One `Mailer` keeps one SMTP session for many messages and reopens it after a failure.

A send ends in one of three ways, because the reminder job must never send twice:
- it returns: the server accepted the message;
- `DeliveryFailed`: the server did not take it (refused sender/recipient/data, or the
  connection failed before the message was handed over). Safe to retry later;
- `DeliveryUnknown`: the connection broke after the message body was sent, before the
  server's final answer. It may have been delivered, so it must not be retried.
"""

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from urllib.parse import unquote, urlsplit

from lib.errors import ConfigError

TIMEOUT_S = 10.0


class DeliveryFailed(Exception):
    """The message was not accepted; `reason` is safe to store (no credentials)."""

    def __init__(self, reason: str, *, unreachable: bool = False):
        super().__init__(reason)
        self.reason = reason[:300]
        self.unreachable = unreachable  # no session could be opened: later sends would fail too


class DeliveryUnknown(Exception):
    """The connection broke after the body was sent: the message may have been delivered."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None


def smtp_server(url: str) -> SmtpServer:
    """Parse SMTP_URL. Raises ConfigError (naming the variable, never its value)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("SMTP_URL must look like smtp://user:pass@host:587 or smtps://host:465")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 587)
    except ValueError:
        raise ConfigError("SMTP_URL has an invalid port") from None
    return SmtpServer(parts.hostname, port, parts.scheme == "smtps",
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None)


class Mailer:
    """One SMTP session for a series of messages. Use as a context manager."""

    def __init__(self, url: str, sender: str, timeout: float = TIMEOUT_S):
        self.server = smtp_server(url)
        self.sender = sender
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "Mailer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def _open(self) -> smtplib.SMTP:
        server, context = self.server, ssl.create_default_context()
        try:
            if server.implicit_tls:
                smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            smtp.ehlo()
            encrypted = server.implicit_tls
            if not encrypted and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                encrypted = True
            if server.username:
                if not encrypted:
                    smtp.close()
                    raise DeliveryFailed("the SMTP server offers no STARTTLS; refusing to send "
                                         "credentials in clear", unreachable=True)
                smtp.login(server.username, server.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryFailed(f"SMTP login refused ({exc.smtp_code})", unreachable=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP connection failed: {type(exc).__name__}", unreachable=True) from None
        return smtp

    def send(self, message: EmailMessage, recipient: str) -> None:
        """Hand one message for one recipient to the server. See the module docstring for
        what each outcome guarantees."""
        if self._smtp is None:
            self._smtp = self._open()
        smtp = self._smtp
        try:
            code, reply = smtp.mail(self.sender)
            if code != 250:
                self._reset()
                raise DeliveryFailed(f"sender refused: {code} {_text(reply)}")
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                self._reset()
                raise DeliveryFailed(f"recipient refused: {code} {_text(reply)}")
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise DeliveryFailed(f"SMTP session failed: {type(exc).__name__}") from None
        try:
            code, reply = smtp.data(message.as_bytes(policy=SMTP_POLICY))
        except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was handed over
            self._reset()
            raise DeliveryFailed(f"data refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise DeliveryUnknown(type(exc).__name__) from None
        if code != 250:
            self._reset()
            raise DeliveryFailed(f"message refused: {code} {_text(reply)}")

    def _reset(self) -> None:
        """Abandon the current transaction; a session that can't even do that is dropped."""
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply))[:200]

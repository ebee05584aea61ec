"""A real SMTP server in this process (aiosmtpd on its own thread) that keeps what it
receives, can refuse chosen recipients, and can hold a message until a test releases it."""

import email
import email.policy
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from devtools.services import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage

    def part(self, subtype: str) -> str:
        return self.message.get_body(preferencelist=(subtype,)).get_content()


@dataclass
class SmtpSink:
    refuse: set[str] = field(default_factory=set)  # RCPT TO these gets 550
    messages: list[Received] = field(default_factory=list)
    hold: threading.Event | None = None  # when set up, DATA waits until it is set
    data_started: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started.set()
        if self.hold is not None:
            await server.loop.run_in_executor(None, self.hold.wait, 30)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.recipients]


class SmtpServer:
    def __init__(self, sink: SmtpSink):
        self.sink = sink
        self.port = free_port()
        self.controller = Controller(sink, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.sink.hold is not None:
            self.sink.hold.set()
        self.controller.stop()

"""SMTP_URL parsing and the transport's guarantees (lib.jobs.mailer), against a real SMTP server."""

from email.message import EmailMessage

import pytest

from lib.errors import ConfigError
from lib.jobs.mailer import DeliveryFailed, Mailer, smtp_server
from devtools.services import free_port
from devtools.smtp import SmtpServer, SmtpSink

pytestmark = pytest.mark.pure  # a real SMTP server, no Postgres, no Redis


@pytest.mark.parametrize("url,expected", [
    ("smtp://mail.example.test", ("mail.example.test", 587, False, None, None)),
    ("smtp://u%40x:p%3Ass@mail.example.test:2525", ("mail.example.test", 2525, False, "u@x", "p:ss")),
    ("smtps://u:p@mail.example.test", ("mail.example.test", 465, True, "u", "p")),
])
def test_smtp_url_forms(url, expected):
    server = smtp_server(url)
    assert (server.host, server.port, server.implicit_tls, server.username, server.password) == expected


@pytest.mark.parametrize("url", ["http://mail.example.test", "smtp:///nohost", "smtp://h:notaport",
                                 "mailto:someone@example.test"])
def test_bad_smtp_url_is_a_config_error_that_hides_the_value(url):
    with pytest.raises(ConfigError) as caught:
        smtp_server(url)
    assert "SMTP_URL" in str(caught.value) and url not in str(caught.value)


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.test", to, "hi"
    message.set_content("héllo")
    return message


def test_one_session_carries_many_messages_and_survives_a_refusal():
    sink = SmtpSink(refuse={"no@example.test"})
    server = SmtpServer(sink)
    try:
        with Mailer(server.url, "a@example.test") as mailer:
            mailer.send(_message("one@example.test"), "one@example.test")
            with pytest.raises(DeliveryFailed) as refused:
                mailer.send(_message("no@example.test"), "no@example.test")
            assert "550" in refused.value.reason and not refused.value.unreachable
            mailer.send(_message("two@example.test"), "two@example.test")
        assert [m.recipients for m in sink.messages] == [["one@example.test"], ["two@example.test"]]
        assert sink.messages[0].message.get_content().strip() == "héllo"
    finally:
        server.stop()


def test_an_unreachable_server_is_reported_as_unreachable():
    with Mailer(f"smtp://127.0.0.1:{free_port()}", "a@example.test", timeout=2) as mailer:
        with pytest.raises(DeliveryFailed) as caught:
            mailer.send(_message("x@example.test"), "x@example.test")
    assert caught.value.unreachable

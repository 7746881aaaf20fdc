"""Email: the rendered message, and delivery to a real aiosmtpd server with STARTTLS and AUTH."""

from __future__ import annotations

import pytest

from elitemon.alerts._model import Status
from elitemon.alerts.receivers import DeliveryError, EmailReceiver
from tests.alerts.receivers.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.receivers.servers import SmtpServer, closed_port, make_alert, make_notification

RECIPIENTS = ["oncall@example.com", "ml-team@example.com"]


def receiver(smarthost: str, certificate=None, **options) -> EmailReceiver:
    settings = {"username": SMTP_USER, "password": SMTP_PASSWORD, "ca_file": certificate[0] if certificate else None}
    settings.update(options)
    return EmailReceiver("ops/email[0]", to=RECIPIENTS, sender="elitemon@example.com", smarthost=smarthost, **settings)


def notification():
    firing = make_alert(
        labels={"node": "10.0.0.5", "gpu": "0"},
        annotations={"action": "add nodes", "description": "<b>memory</b> & more"},
        value=0.97,
        generator_url="http://elitemon:8265/rules/x",
    )
    second = make_alert(labels={"node": "10.0.0.5", "gpu": "1"}, value=0.95)
    return make_notification(
        firing,
        second,
        group_labels={"alertname": "resource_exhaustion", "node": "10.0.0.5"},
        external_url="http://elitemon:8265",
    )


def test_render_subject_text_and_escaped_html():
    message = receiver("mail.example.com:587").render(notification())
    assert message["Subject"] == "[FIRING:2] resource_exhaustion (node=10.0.0.5)"
    assert message["From"] == "elitemon@example.com"
    assert message["To"] == "oncall@example.com, ml-team@example.com"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    assert "name: resource_exhaustion\nseverity: critical\nstatus: firing\nvalue: 0.97\n" in text
    assert "started: 2023-11-14T22:13:20Z\naction: add nodes\ndescription: <b>memory</b> & more\n" in text
    assert "labels: gpu=0, node=10.0.0.5\nsource: http://elitemon:8265/rules/x" in text
    assert text.rstrip().endswith("Open in elitemon: http://elitemon:8265")
    html_part = message.get_body(("html",)).get_content()
    assert html_part.count("<table") == 2
    for key, value in [
        ("name", "resource_exhaustion"),
        ("severity", "critical"),
        ("status", "firing"),
        ("value", "0.97"),
        ("started", "2023-11-14T22:13:20Z"),
        ("action", "add nodes"),
        ("description", "&lt;b&gt;memory&lt;/b&gt; &amp; more"),
        ("labels", "gpu=0, node=10.0.0.5"),
    ]:
        assert f'<tr><th align="left">{key}</th><td>{value}</td></tr>' in html_part
    assert "<b>memory" not in html_part
    assert '<a href="http://elitemon:8265">Open in elitemon</a>' in html_part


def test_resolved_subject_and_end_time():
    alert = make_alert(status=Status.RESOLVED, ends_at=1_700_000_060.0)
    message = receiver("mail.example.com:587").render(make_notification(alert))
    assert message["Subject"] == "[RESOLVED] resource_exhaustion"
    assert "ended: 2023-11-14T22:14:20Z" in message.get_body(("plain",)).get_content()


def test_delivers_over_starttls_with_auth(smtp_server, certificate):
    receiver(smtp_server.smarthost, certificate).deliver(notification(), timeout_s=5)
    (message,) = smtp_server.messages
    assert smtp_server.envelopes == [("elitemon@example.com", RECIPIENTS)]
    assert message["Subject"] == "[FIRING:2] resource_exhaustion (node=10.0.0.5)"
    assert message["Date"] and message["Message-ID"].endswith("@example.com>")
    assert "description: <b>memory</b> & more" in message.get_body(("plain",)).get_content()
    assert "&lt;b&gt;memory&lt;/b&gt; &amp; more" in message.get_body(("html",)).get_content()


def test_a_wrong_password_is_not_retried_and_not_shown(smtp_server, certificate):
    wrong = receiver(smtp_server.smarthost, certificate, password="wrong-password-123")
    with pytest.raises(DeliveryError) as caught:
        wrong.deliver(notification(), timeout_s=5)
    assert (caught.value.status, caught.value.retryable) == (535, False)
    assert "wrong-password-123" not in str(caught.value) and "wrong-password-123" not in repr(wrong)
    assert smtp_server.messages == []


def test_an_untrusted_certificate_is_not_retried(smtp_server):
    with pytest.raises(DeliveryError, match="certificate") as caught:
        receiver(smtp_server.smarthost).deliver(notification(), timeout_s=5)
    assert not caught.value.retryable


def test_tls_verify_off_accepts_any_certificate(smtp_server):
    receiver(smtp_server.smarthost, tls_verify=False).deliver(notification(), timeout_s=5)
    assert len(smtp_server.messages) == 1


def test_a_server_without_starttls_gets_nothing_unless_tls_is_optional():
    server = SmtpServer()
    try:
        with pytest.raises(DeliveryError, match="STARTTLS") as caught:
            receiver(server.smarthost, username=None, password=None).deliver(notification(), timeout_s=5)
        assert not caught.value.retryable
        with pytest.raises(DeliveryError, match="credentials without TLS"):
            receiver(server.smarthost, require_tls=False).deliver(notification(), timeout_s=5)
        receiver(server.smarthost, username=None, password=None, require_tls=False).deliver(notification(), timeout_s=5)
        assert len(server.messages) == 1
    finally:
        server.close()


def test_refused_recipients_are_not_retried():
    server = SmtpServer(refuse="ml-team@example.com")
    try:
        plain = receiver(server.smarthost, username=None, password=None, require_tls=False)
        with pytest.raises(DeliveryError, match="some recipients refused: ml-team@example.com: 550") as caught:
            plain.deliver(notification(), timeout_s=5)
        assert not caught.value.retryable
        assert server.envelopes == [("elitemon@example.com", ["oncall@example.com"])]
        alone = EmailReceiver(
            "e", to=["ml-team@example.com"], sender="a@example.com", smarthost=server.smarthost, require_tls=False
        )
        with pytest.raises(DeliveryError, match="all recipients refused") as caught:
            alone.deliver(notification(), timeout_s=5)
        assert (caught.value.status, caught.value.retryable) == (550, False)
    finally:
        server.close()


def test_an_unreachable_server_is_retryable():
    with pytest.raises(DeliveryError) as caught:
        receiver(f"127.0.0.1:{closed_port()}").deliver(notification(), timeout_s=2)
    assert caught.value.retryable and SMTP_PASSWORD not in str(caught.value)


def test_describe_masks_the_password():
    email = receiver("mail.example.com:587")
    assert email.describe() == {
        "name": "ops/email[0]",
        "type": "email",
        "to": RECIPIENTS,
        "from": "elitemon@example.com",
        "smarthost": "mail.example.com:587",
        "auth_username": SMTP_USER,
        "auth_password": "<secret>",
        "require_tls": True,
        "ca_file": None,
        "tls_verify": True,
    }
    assert SMTP_PASSWORD not in repr(email)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"smarthost": "mail.example.com"}, "smarthost"),
        ({"smarthost": "mail.example.com:0"}, "smarthost"),
        ({"to": []}, "to must"),
        ({"to": 42}, "to must"),
        ({"to": ["a@example.com", 7]}, "to must"),
        ({"sender": "nobody"}, "from must"),
        ({"require_tls": "yes"}, "require_tls"),
        ({"ca_file": "/no/such/ca.pem"}, "ca_file"),
        ({"ca_file": 0}, "ca_file must be a path"),  # not a file descriptor
        ({"ca_file": 10**30}, "ca_file must be a path"),
        ({"password": None}, "together"),
    ],
)
def test_bad_settings_are_value_errors(options, match):
    settings = {"to": RECIPIENTS, "sender": "a@example.com", "smarthost": "mail.example.com:587"}
    settings.update(username="u", password="p")
    settings.update(options)
    with pytest.raises(ValueError, match=match):
        EmailReceiver("e", **settings)


def test_to_may_be_a_comma_separated_string():
    email = EmailReceiver("e", to="a@example.com, b@example.com", sender="x@example.com", smarthost="[::1]:25")
    assert email.describe()["to"] == ["a@example.com", "b@example.com"]
    assert email.describe()["smarthost"] == "::1:25"

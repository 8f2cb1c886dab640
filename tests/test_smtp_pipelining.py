"""Sending to a relay that offers PIPELINING (RFC 2920), as Postfix does: MAIL, RCPT and DATA
go in one write. What arrives, and how refusals are reported, is the same as without it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from circulars.config import SmtpRelay
from circulars.mail.transport import DeliveryError, SmtpConnection, accepting_after

from conftest import SmtpSink, free_port


class PipeliningSink(SmtpSink):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture(scope="module")
def relay() -> Iterator[PipeliningSink]:
    sink = PipeliningSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def connection(relay: PipeliningSink) -> Iterator[SmtpConnection]:
    relay.reset()
    connection = SmtpConnection(SmtpRelay(relay.host, relay.port, "none"), timeout=10)
    connection.open()
    assert connection._smtp is not None and connection._smtp.has_extn("pipelining")
    yield connection
    connection.close()


MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: dots\r\n\r\n"
    b".a line starting with a dot\r\n..two\r\n.\r\nend\r\n"
)


def test_messages_arrive_intact_one_after_another(relay, connection):
    for index in range(3):
        connection.send("bounces+1@example.org", f"p{index}@example.org", MESSAGE)
    received = relay.wait_for(3, timeout=10)
    assert [item.rcpt_tos for item in received] == [[f"p{i}@example.org"] for i in range(3)]
    assert all(item.mail_from == "bounces+1@example.org" for item in received)
    assert all(item.data == MESSAGE for item in received)


def test_a_refused_recipient_is_permanent_and_the_connection_goes_on(relay, connection):
    relay.reject["gone@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(DeliveryError) as refused:
        connection.send("bounces+1@example.org", "gone@example.org", MESSAGE)
    assert refused.value.permanent and refused.value.code == 550
    assert refused.value.reply == "550 5.1.1 No such user"
    connection.send("bounces+1@example.org", "here@example.org", MESSAGE)
    received = relay.wait_for(1, timeout=10)
    assert [item.rcpt_tos for item in received] == [["here@example.org"]]


def test_a_deferred_recipient_is_temporary_and_the_connection_goes_on(relay, connection):
    relay.defer["busy@example.org"] = 1
    with pytest.raises(DeliveryError) as deferred:
        connection.send("bounces+1@example.org", "busy@example.org", MESSAGE)
    assert not deferred.value.permanent and deferred.value.code == 451
    connection.send("bounces+1@example.org", "busy@example.org", MESSAGE)
    received = relay.wait_for(1, timeout=10)
    assert [item.rcpt_tos for item in received] == [["busy@example.org"]]
    assert received[0].data == MESSAGE


def test_the_gate_runs_before_the_relay_takes_each_message(relay, connection):
    seen_before: list[int] = []
    with accepting_after(lambda: seen_before.append(len(relay.messages()))):
        for index in range(3):
            connection.send("bounces+1@example.org", f"p{index}@example.org", MESSAGE)
    # Once per message, each time with the message not yet taken.
    assert seen_before == [0, 1, 2]
    assert len(relay.wait_for(3, timeout=10)) == 3


def test_a_failing_gate_leaves_the_message_untaken(relay, connection):
    class RecordNotCommitted(Exception):
        pass

    def fail() -> None:
        raise RecordNotCommitted

    with accepting_after(fail), pytest.raises(RecordNotCommitted):
        connection.send("bounces+1@example.org", "p0@example.org", MESSAGE)
    time.sleep(0.3)
    assert relay.messages() == []
    # The connection was dropped mid-message; the next send opens a new one.
    connection.send("bounces+1@example.org", "p1@example.org", MESSAGE)
    assert [item.rcpt_tos for item in relay.wait_for(1, timeout=10)] == [["p1@example.org"]]

"""Bodies encoded once per send and filled per recipient decode to exactly the filled
template, with CRLF line ends and no line over 76 characters, as encoding each whole
body per message did."""

from __future__ import annotations

import email
import email.policy
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from circulars.mail.mime import Envelope, build_message, prepare_message
from circulars.mail.personalise import RecipientFields

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HTML = (
    '<html><body>\r\n<p style="margin: 0;">%%CIRCULARS.greeting%%</p>\r\n'
    + "<p>"
    + "Long line of the circular, = signs, tabs\tand trailing spaces  " * 9
    + "</p>\r\n"
    + '<a href="%%CIRCULARS.unsubscribe_url%%">Unsubscribe</a>%%CIRCULARS.name%%'
    + "<pre>   indented\r\n\tcode   </pre>%%CIRCULARS.email%%\r\n</body></html>\r\n"
)
TEXT = (
    "%%CIRCULARS.greeting%%\r\n\r\n"
    + "Body text é ü 漢字 " * 30
    + "\r\n%%CIRCULARS.preferences_url%%"
)


def message(name: str, url: str) -> tuple[bytes, bytes]:
    prepared = prepare_message(
        from_name="Network",
        from_address="secretariat@example.org",
        subject="Circular",
        html_template=HTML,
        text_template=TEXT,
        attachments=[],
        list_names={1: ("news", "News")},
        domain="example.org",
    )
    fields = RecipientFields(
        name=name,
        email="a@example.org",
        list_name="News",
        unsubscribe_url=url,
        preferences_url=url,
    ).values()
    envelope = Envelope(name, "a@example.org", 1, url, None, "<1@example.org>", fields)
    once = build_message(prepared, envelope, now=NOW)
    whole = build_message(replace(prepared, html_qp=(), text_qp=()), envelope, now=NOW)
    return once, whole


def parts(data: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return {
        part.get_content_type(): part.get_content()
        for part in parsed.walk()
        if not part.is_multipart()
    }


NAMES = ["", "Ana Pérez", "O'Brien & <Sons>", "x" * 200, "trailing space ", "=3D=", "漢字 " * 40]


@pytest.mark.parametrize("name", NAMES)
def test_encoded_once_decodes_as_encoded_whole(name: str) -> None:
    url = "https://circulars.example.org/u/" + "Zk3xYw.abc-DEF_" * 12
    once, whole = message(name, url)
    assert parts(once) == parts(whole)
    assert name in parts(once)["text/plain"]


def test_random_values_keep_lines_short_and_crlf() -> None:
    rng = random.Random(3)
    alphabet = "ab =\t.é漢<>&\"'"
    for _ in range(200):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        url = "https://x.example/" + "".join(
            rng.choice("aZ09-_.=") for _ in range(rng.randrange(0, 200))
        )
        once, whole = message(name, url)
        assert parts(once) == parts(whole)
        assert b"\n" not in once.replace(b"\r\n", b"")
        assert max(len(line) for line in once.split(b"\r\n")) <= 998
        body = once.partition(b"\r\n\r\n")[2]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76, name

"""The DATA payload we write by hand is byte for byte what smtplib would send."""

from __future__ import annotations

import random
import smtplib

import pytest

from circulars.mail.transport import stuff_dots


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b".",
        b".\r\n",
        b"..leading\r\n.\r\nmiddle\r\n.dot\r\n",
        b"no dots at line starts. none.\r\n",
        b"bare\n.lf\r.cr\r\n.\r\n",
        b"\r\n.\r\n.\r\n",
    ],
)
def test_dots_are_stuffed_as_smtplib_does(data: bytes) -> None:
    assert stuff_dots(data) == smtplib._quote_periods(data)  # type: ignore[attr-defined]


def test_random_messages_are_stuffed_as_smtplib_does() -> None:
    rng = random.Random(7)
    for _ in range(500):
        data = bytes(rng.choice(b".\r\nab ") for _ in range(rng.randrange(0, 60)))
        assert stuff_dots(data) == smtplib._quote_periods(data)  # type: ignore[attr-defined]

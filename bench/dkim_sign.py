"""Milliseconds per message to DKIM-sign a circular: dkimpy's `dkim.sign` against ours.

Two shapes, as in the send benchmark: a personalised 20 KB circular without
attachment, and the same with a 100 KB PDF (about 137 KB on the wire); RSA-2048
and Ed25519. Each signature is checked with `dkim.verify` once before timing.

    .venv/bin/python bench/dkim_sign.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from circulars.mail.branding import Branding  # noqa: E402
from circulars.mail.dkim import DkimKey, DkimSigner, write_key  # noqa: E402
from circulars.mail.mime import AttachmentData, Envelope, build_message, prepare_message  # noqa: E402
from circulars.mail.personalise import RecipientFields  # noqa: E402
from circulars.mail.render import AttachmentInfo, render_circular  # noqa: E402

DOMAIN = "example.org"


def message(attachment: bool, target: int = 20_000) -> bytes:
    paragraph = (
        "The Secretariat has the honour to inform the member organisations that the "
        "meeting of the working group will take place as planned. Delegations wishing "
        "to attend are invited to register through the usual channels before the end "
        "of the month, and to send the names of their representatives.\n\n"
    )
    files = [AttachmentData("statement.pdf", "application/pdf", os.urandom(100_000))]
    body = "Colleagues,\n\n"
    while True:
        rendered = render_circular(
            number=42,
            title="Meeting of the working group",
            body_markdown=body,
            attachments=[AttachmentInfo(f.filename, len(f.data)) for f in files]
            if attachment
            else [],
            branding=Branding(name="The Secretariat", signoff="The Secretariat"),
            sent_on=date(2026, 11, 28),
            base_url="https://circulars.example.org",
        )
        prepared = prepare_message(
            from_name="The Secretariat",
            from_address=f"secretariat@{DOMAIN}",
            subject=rendered.subject,
            html_template=rendered.html,
            text_template=rendered.text,
            attachments=files if attachment else [],
            list_names={1: ("news", "News")},
            domain=DOMAIN,
        )
        url = "https://circulars.example.org/u/" + "x" * 120
        data = build_message(
            prepared,
            Envelope(
                to_name="Zoë Martin",
                to_address="zoe.martin@example.org",
                list_id=1,
                unsubscribe_url=url,
                unsubscribe_mailto=None,
                message_id=f"<42.1.abcdef@{DOMAIN}>",
                fields=RecipientFields(
                    name="Zoë Martin",
                    email="zoe.martin@example.org",
                    list_name="News",
                    unsubscribe_url=url,
                    preferences_url=url,
                ).values(),
            ),
        )
        without_attachment = len(data) - (len(prepared.attachments_block) if attachment else 0)
        if without_attachment >= target:
            return data
        body += paragraph


def per_message_ms(func: object, rounds: int) -> float:
    assert callable(func)
    func()
    start = time.perf_counter()
    for _ in range(rounds):
        func()
    return (time.perf_counter() - start) / rounds * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = {
            "rsa": write_key(Path(tmp), "bench-rsa", "rsa"),
            "ed25519": write_key(Path(tmp), "bench-ed", "ed25519"),
        }
    records = {
        f"{key.dns_name(DOMAIN)}.".encode(): key.dns_value().encode() for key in keys.values()
    }

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    def dkimpy_key(key: DkimKey) -> bytes:
        if key.algorithm == "rsa":
            return key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        raw = key.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(raw)

    headers = [h.encode() for h in ("from", "to", "subject", "date", "message-id")] + [
        b"mime-version",
        b"content-type",
        b"list-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"from",
    ]
    print(f"{'message':>22} {'algorithm':>9} {'dkimpy ms':>10} {'ours ms':>8} {'speed-up':>8}")
    for label, data in (
        ("20 KB, no attachment", message(False)),
        ("with 100 KB PDF", message(True, target=0)),
    ):
        for algorithm, key in keys.items():
            signer = DkimSigner(DOMAIN, [key])
            private = dkimpy_key(key)

            def theirs(data: bytes = data, private: bytes = private, key: DkimKey = key) -> bytes:
                return dkim.sign(
                    data,
                    key.selector.encode(),
                    DOMAIN.encode(),
                    private,
                    signature_algorithm=key.signature_algorithm,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=headers,
                )

            def ours(data: bytes = data, signer: DkimSigner = signer) -> bytes:
                return signer.sign(data)

            assert dkim.verify(theirs() + data, dnsfunc=dnsfunc), "dkimpy's signature"
            assert dkim.verify(ours(), dnsfunc=dnsfunc), "our signature"
            slow = per_message_ms(theirs, max(20, args.rounds // 10))
            fast = per_message_ms(ours, args.rounds)
            size = f"{label} ({len(data) // 1024} KB)"
            print(f"{size:>22} {algorithm:>9} {slow:10.2f} {fast:8.3f} {slow / fast:7.0f}x")


if __name__ == "__main__":
    main()

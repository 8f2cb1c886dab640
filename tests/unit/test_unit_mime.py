"""The bytes of each message, checked by parsing them back with the standard library."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from circulars.mail.branding import Branding
from circulars.mail.mime import (
    AttachmentData,
    Envelope,
    HeaderValueError,
    PreparedMessage,
    build_message,
    encode_header,
    new_message_id,
    prepare_message,
)
from circulars.mail.personalise import RecipientFields, unfilled
from circulars.mail.render import AttachmentInfo, render_circular
from circulars.storage import safe_filename

DOMAIN = "network.example.org"
UNSUBSCRIBE = "https://circulars.network.example.org/u/WzQyLDdd.Zk3xYw.abcDEF-ghi_jkl"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\r\n\x00\xff%%EOF\n"
DOCX = b"PK\x03\x04" + bytes(reversed(range(256))) * 13


def prepare(
    *,
    subject: str = "Circular No. 27: Global Compact, last round of negotiations",
    html: str = "<html><body><p>%%CIRCULARS.greeting%%</p><p>Body</p></body></html>\r\n",
    text: str = "%%CIRCULARS.greeting%%\r\n\r\nBody\r\n",
    attachments: Sequence[AttachmentData] = (),
    list_names: dict[int, tuple[str, str]] | None = None,
    from_name: str = "Migrant Forum Network",
) -> PreparedMessage:
    return prepare_message(
        from_name=from_name,
        from_address=f"secretariat@{DOMAIN}",
        subject=subject,
        html_template=html,
        text_template=text,
        attachments=list(attachments),
        list_names={7: ("members", "Members")} if list_names is None else list_names,
        domain=DOMAIN,
    )


def envelope(
    *,
    name: str = "Ana Pérez",
    address: str = "ana@example.org",
    list_id: int | None = 7,
    unsubscribe_url: str = UNSUBSCRIBE,
    unsubscribe_mailto: str | None = f"unsubscribe+42.7@{DOMAIN}",
    message_id: str | None = None,
) -> Envelope:
    fields = RecipientFields(
        name=name,
        email=address,
        list_name="Members",
        unsubscribe_url=unsubscribe_url,
        preferences_url="https://circulars.network.example.org/p/WzQyXQ.Zk3xYw.xyz",
    ).values()
    return Envelope(
        to_name=name,
        to_address=address,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        message_id=message_id or new_message_id(DOMAIN, 42, 7),
        fields=fields,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def raw_header(raw: bytes, name: str) -> list[str]:
    """The raw, still folded text of every header field called `name`."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields: list[list[str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    prefix = name.lower() + ":"
    return ["\r\n".join(lines) for lines in fields if lines[0].lower().startswith(prefix)]


def assert_wire_format(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    bare = [line for line in lines if b"\n" in line or b"\r" in line]
    assert not bare, f"bare CR or LF in {bare[:3]!r}"
    long = [line[:60] for line in lines if len(line) > 998]
    assert not long, f"lines over 998 bytes: {long!r}"


def body_text(message: EmailMessage, kind: str) -> str:
    """The decoded text of the text/plain or text/html alternative."""
    part = message.get_body(preferencelist=(kind,))
    assert part is not None and part.get_content_subtype() == kind
    content = part.get_content()
    assert isinstance(content, str)
    return content


# --- structure ------------------------------------------------------------------------------


def test_with_attachments_it_is_mixed_around_alternative() -> None:
    prepared = prepare(
        attachments=[
            AttachmentData("Statement.pdf", "application/pdf", PDF),
            AttachmentData(
                "Annex.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                DOCX,
            ),
        ]
    )
    message = parse(build_message(prepared, envelope()))

    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == [
        "multipart/alternative",
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ]
    alternative = list(parts[0].iter_parts())
    assert [part.get_content_type() for part in alternative] == ["text/plain", "text/html"]
    assert [part.get_content_charset() for part in alternative] == ["utf-8", "utf-8"]
    assert [part.get_filename() for part in parts[1:]] == ["Statement.pdf", "Annex.docx"]
    assert all(part.get_content_disposition() == "attachment" for part in parts[1:])


def test_without_attachments_the_top_is_alternative() -> None:
    message = parse(build_message(prepare(), envelope()))

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert message["MIME-Version"] == "1.0"


def test_attachment_bytes_arrive_unchanged() -> None:
    prepared = prepare(
        attachments=[
            AttachmentData("Statement.pdf", "application/pdf", PDF),
            AttachmentData("tiny.bin", "application/octet-stream", b"\x00"),
        ]
    )
    message = parse(build_message(prepared, envelope()))

    payloads = [part.get_content() for part in message.iter_attachments()]
    assert payloads == [PDF, b"\x00"]


@pytest.mark.parametrize(
    "filename",
    [
        "Déclaration finale – 2017.pdf",
        "بيان.pdf",
        "Заявление о миграции.docx",
        "移民问题声明.pdf",
        'Report "final" version.pdf',
        "back\\slash.pdf",
    ],
)
def test_attachment_file_names_round_trip(filename: str) -> None:
    prepared = prepare(attachments=[AttachmentData(filename, "application/pdf", PDF)])
    raw = build_message(prepared, envelope())

    (attachment,) = parse(raw).iter_attachments()
    assert attachment.get_filename() == filename
    assert attachment.get_content() == PDF
    assert_wire_format(raw)


def test_long_non_ascii_file_name_keeps_crlf_line_endings() -> None:
    filename = "بيان ختامي للجولة الأخيرة من المفاوضات بشأن الاتفاق العالمي للهجرة.pdf"
    assert safe_filename(filename) == filename
    prepared = prepare(attachments=[AttachmentData(filename, "application/pdf", PDF)])

    raw = build_message(prepared, envelope())

    assert_wire_format(raw)
    (attachment,) = parse(raw).iter_attachments()
    assert attachment.get_filename() == filename


def test_longest_allowed_non_ascii_file_name_keeps_lines_under_998_bytes() -> None:
    filename = ("الاتفاق العالمي من أجل الهجرة الآمنة والمنظمة والنظامية " * 4)[:175] + ".pdf"
    assert safe_filename(filename) == filename  # an upload may carry exactly this name
    prepared = prepare(attachments=[AttachmentData(filename, "application/pdf", PDF)])

    raw = build_message(prepared, envelope())

    # RFC 5322 2.1.1: no line longer than 998 bytes (RFC 2231 continuations exist for this).
    long = [line[:40] for line in re.split(rb"\r\n|\n", raw) if len(line) > 998]
    assert not long, f"lines over 998 bytes: {long!r}"
    (attachment,) = parse(raw).iter_attachments()
    assert attachment.get_filename() == filename


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Circular No. 27: Global Compact, last round of negotiations",
        "Circulaire n° 27 : Déclaration finale – négociations",
        "تعميم رقم 27: الاتفاق العالمي، الجولة الأخيرة من المفاوضات",
        "Циркуляр № 27: " + "Глобальный договор о безопасной миграции " * 4,
        "Circular No. 28: " + "a-very-long-unbroken-word-" * 6,
    ],
)
def test_subject_round_trips(subject: str) -> None:
    raw = build_message(prepare(subject=subject), envelope())
    assert parse(raw)["Subject"] == subject
    assert_wire_format(raw)


@pytest.mark.parametrize(
    "name",
    ["Ana Pérez", "José Ñúñez-Ölmez", "منظمة العمل من أجل المهاجرين", "Ana", "O'Hara, Mary", ""],
)
def test_to_name_and_address_round_trip(name: str) -> None:
    message = parse(build_message(prepare(), envelope(name=name, address="ana@example.org")))
    (address,) = message["To"].addresses
    assert address.display_name == name
    assert address.addr_spec == "ana@example.org"


def test_from_name_round_trips() -> None:
    message = parse(build_message(prepare(from_name="Secrétariat du réseau"), envelope()))
    (address,) = message["From"].addresses
    assert address.display_name == "Secrétariat du réseau"
    assert address.addr_spec == f"secretariat@{DOMAIN}"


def test_line_breaks_in_the_to_name_cannot_add_headers() -> None:
    raw = build_message(prepare(), envelope(name="Ana\r\nBcc: everyone@example.org\r\n"))
    message = parse(raw)
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "ana@example.org"


def test_list_unsubscribe_headers_follow_rfc_8058() -> None:
    raw = build_message(prepare(), envelope())
    message = parse(raw)

    (unsubscribe,) = raw_header(raw, "List-Unsubscribe")
    assert f"<{UNSUBSCRIBE}>" in unsubscribe
    assert f"<mailto:unsubscribe+42.7@{DOMAIN}>" in unsubscribe
    assert "=?" not in unsubscribe
    assert raw_header(raw, "List-Unsubscribe-Post") == [
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    ]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("mailto", [None, f"unsubscribe+1000000000.1000000000@{DOMAIN}"])
def test_long_list_unsubscribe_url_is_written_as_is(mailto: str | None) -> None:
    url = "https://circulars.network.example.org/unsubscribe/" + "Ab1-_" * 32
    assert len(url) > 200
    raw = build_message(prepare(), envelope(unsubscribe_url=url, unsubscribe_mailto=mailto))

    (unsubscribe,) = raw_header(raw, "List-Unsubscribe")
    assert "=?" not in unsubscribe
    assert unsubscribe.splitlines()[0] == f"List-Unsubscribe: <{url}>" + ("," if mailto else "")
    assert_wire_format(raw)
    values = re.findall(r"<([^>]+)>", str(parse(raw)["List-Unsubscribe"]))
    assert values == [url] + ([f"mailto:{mailto}"] if mailto else [])


def test_no_list_unsubscribe_without_a_url() -> None:
    raw = build_message(prepare(), envelope(unsubscribe_url="", unsubscribe_mailto=None))
    assert raw_header(raw, "List-Unsubscribe") == []
    assert raw_header(raw, "List-Unsubscribe-Post") == []


def test_list_id_names_the_list_and_its_label() -> None:
    raw = build_message(prepare(), envelope(list_id=7))
    assert parse(raw)["List-Id"] == f"Members <members.{DOMAIN}>"
    assert raw_header(raw, "List-Id") == [f"List-Id: Members <members.{DOMAIN}>"]


def test_list_id_of_a_non_ascii_list_keeps_the_label_literal() -> None:
    # RFC 2919: clients filter on the <label>; RFC 2047 forbids encoding it into a word.
    prepared = prepare(list_names={7: ("membres", "Membres du réseau")})
    raw = build_message(prepared, envelope(list_id=7))

    (list_id,) = raw_header(raw, "List-Id")
    assert f"<membres.{DOMAIN}>" in list_id
    assert parse(raw)["List-Id"] == f"Membres du réseau <membres.{DOMAIN}>"


def test_no_list_id_for_a_message_outside_a_list() -> None:
    raw = build_message(prepare(), envelope(list_id=None))
    assert parse(raw)["List-Id"] is None


def test_message_id_is_the_envelopes_and_unique_per_call() -> None:
    ids = {new_message_id(DOMAIN, 42, 7) for _ in range(2000)}
    assert len(ids) == 2000
    for message_id in list(ids)[:20]:
        assert re.fullmatch(rf"<42\.7\.[0-9a-f]+@{re.escape(DOMAIN)}>", message_id)
    assert re.fullmatch(rf"<[0-9a-f]{{24}}@{re.escape(DOMAIN)}>", new_message_id(DOMAIN))

    first, second = new_message_id(DOMAIN, 1), new_message_id(DOMAIN, 1)
    one = parse(build_message(prepare(), envelope(message_id=first)))
    two = parse(build_message(prepare(), envelope(message_id=second)))
    assert one["Message-ID"] == first
    assert two["Message-ID"] == second
    assert first != second


def test_date_header() -> None:
    when = datetime(2017, 9, 10, 8, 30, tzinfo=UTC)
    message = parse(build_message(prepare(), envelope(), now=when))
    assert parsedate_to_datetime(message["Date"]) == when


def test_date_defaults_to_now() -> None:
    message = parse(build_message(prepare(), envelope()))
    sent = parsedate_to_datetime(message["Date"])
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 60


@pytest.mark.parametrize("value", ["a\r\nBcc: x@example.org", "a\nb", "a\rb", "a\x00b"])
def test_encode_header_refuses_line_breaks(value: str) -> None:
    with pytest.raises(HeaderValueError):
        encode_header("Subject", value)


@pytest.mark.parametrize(
    "value",
    ["Plain ASCII subject " * 8, "Déclaration finale – négociations " * 5, "بيان " * 40],
)
def test_encode_header_folds_to_78_columns(value: str) -> None:
    encoded = encode_header("Subject", value)
    assert encoded.startswith("Subject: ")
    assert all(len(line) <= 78 for line in encoded.split("\r\n"))
    assert "\n" not in encoded.replace("\r\n", "")


def test_boundaries_differ_between_sends() -> None:
    one, two = prepare(), prepare()
    assert one.mixed_boundary != two.mixed_boundary
    assert one.alt_boundary != two.alt_boundary


# --- bodies ---------------------------------------------------------------------------------


def test_personal_name_is_escaped_in_html_and_raw_in_text() -> None:
    name = '<b>"O\'Hara & Co"</b>'
    message = parse(build_message(prepare(), envelope(name=name)))

    assert f"Dear {name}," in body_text(message, "plain")
    html_text = body_text(message, "html")
    assert "<b>" not in html_text
    assert "Dear &lt;b&gt;&quot;O&#x27;Hara &amp; Co&quot;&lt;/b&gt;," in html_text
    assert message["To"].addresses[0].display_name == name


BRANDING = Branding(
    name="Migrant Forum Network",
    signoff="The Secretariat",
    postal_address="Rue de Varembé 1 | 1202 Geneva",
    color="#1f4e79",
)


@pytest.fixture(scope="module")
def rendered_message() -> tuple[bytes, str, str]:
    long_line = " ".join(["négociations"] * 150)
    rendered = render_circular(
        number=27,
        title="Déclaration finale – Global Compact",
        body_markdown=f"First paragraph.\n\n{long_line}\n\nبيان ختامي\n\nTrailing space   \n",
        attachments=[AttachmentInfo("Déclaration finale – 2017.pdf", len(PDF))],
        branding=BRANDING,
        sent_on=date(2017, 9, 10),
        language="fr",
    )
    prepared = prepare_message(
        from_name="Secrétariat",
        from_address=f"secretariat@{DOMAIN}",
        subject=rendered.subject,
        html_template=rendered.html,
        text_template=rendered.text,
        attachments=[AttachmentData("Déclaration finale – 2017.pdf", "application/pdf", PDF)],
        list_names={7: ("members", "Members")},
        domain=DOMAIN,
    )
    return build_message(prepared, envelope(name="Zoë O'Brien")), rendered.html, rendered.text


def test_rendered_circular_is_on_the_wire_correctly(
    rendered_message: tuple[bytes, str, str],
) -> None:
    raw, _, _ = rendered_message
    assert_wire_format(raw)
    assert raw.isascii()


def test_rendered_circular_bodies_survive_encoding(
    rendered_message: tuple[bytes, str, str],
) -> None:
    raw, html, text = rendered_message
    message = parse(raw)
    fields = envelope(name="Zoë O'Brien").fields

    plain = body_text(message, "plain")
    html_part = body_text(message, "html")

    assert "Dear Zoë O'Brien," in plain
    assert " ".join(["négociations"] * 150) in plain
    assert "بيان ختامي" in plain
    assert "Dear Zoë O&#x27;Brien," in html_part
    assert 'dir="ltr"' in html_part and 'lang="fr"' in html_part
    assert unfilled(plain) == [] and unfilled(html_part) == []
    assert fields["unsubscribe_url"] in plain
    assert fields["unsubscribe_url"] in html_part
    # Apart from the substitutions, the parts are what was rendered (CRLF read back as LF).
    assert plain.count("\n") == text.count("\r\n")
    assert html_part.count("\n") == html.count("\r\n")
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "Déclaration finale – 2017.pdf"
    assert attachment.get_content() == PDF

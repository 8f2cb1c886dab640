"""Reading a subscriber CSV: refusals for the whole file, reasons and line numbers for bad rows."""

from __future__ import annotations

import io
from typing import IO

import pytest

from circulars.subscribers.importer import ImportRefused, ImportReport, Row, read_rows


def read(data: bytes) -> tuple[list[Row], ImportReport]:
    report = ImportReport()
    rows = list(read_rows(io.BytesIO(data), report))
    return rows, report


def refused(data: bytes | IO[bytes]) -> str:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    with pytest.raises(ImportRefused) as caught:
        list(read_rows(stream, ImportReport()))
    return str(caught.value)


class Unseekable(io.RawIOBase):
    """An upload stream that can only be read forward."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._stream.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# --- the whole file ---------------------------------------------------------------------------


def test_good_file_yields_rows() -> None:
    rows, report = read(
        b"email,name,language,organization\r\n"
        b"ana@example.org,Ana P\xc3\xa9rez,es,Red de Migrantes\r\n"
        b"Bob@Example.ORG , Bob ,FR,\r\n"
    )

    assert rows == [
        Row(2, "ana@example.org", "Ana Pérez", "es", "Red de Migrantes", {}),
        Row(3, "bob@example.org", "Bob", "fr", "", {}),
    ]
    assert report.rejected == []


def test_only_the_email_column_is_needed_and_language_defaults_to_english() -> None:
    rows, _ = read(b"email\nana@example.org\n")
    assert rows == [Row(2, "ana@example.org", "", "en", "", {})]


def test_header_names_are_case_and_space_insensitive() -> None:
    rows, _ = read(b" Email , NAME \nana@example.org,Ana\n")
    assert [(row.email, row.name) for row in rows] == [("ana@example.org", "Ana")]


def test_columns_may_come_in_any_order() -> None:
    rows, _ = read(b"name,language,email\nAna,pt-br,ana@example.org\n")
    assert rows == [Row(2, "ana@example.org", "Ana", "pt-br", "", {})]


@pytest.mark.parametrize(
    "data",
    [
        b"name,language\nAna,es\n",
        b"ana@example.org,Ana\nbob@example.org,Bob\n",
        b"e-mail,name\nana@example.org,Ana\n",
    ],
)
def test_header_with_an_email_column_is_required(data: bytes) -> None:
    assert "email" in refused(data)


def test_header_naming_a_column_twice_is_refused() -> None:
    assert "twice" in refused(b"email,name,Email\na@example.org,A,b@example.org\n")


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_empty_file_is_refused(data: bytes) -> None:
    assert "empty" in refused(data)


@pytest.mark.parametrize(
    "data",
    [
        b"email,name\nana@example.org,Ren\xe9\n",  # latin-1
        b"\xe9mail\nana@example.org\n",
        b"email,name\n" + "ana@example.org,Zoë\n".encode("cp1252"),
    ],
)
def test_file_that_is_not_utf8_is_refused(data: bytes) -> None:
    assert "UTF-8" in refused(data)


def test_utf16_file_is_refused() -> None:
    # What "Unicode text" means in some spreadsheet programs.
    message = refused("email,name\nana@example.org,Ana\n".encode("utf-16"))
    assert "UTF-8" in message or "binary" in message


def test_not_utf8_message_names_the_line_with_the_bad_bytes() -> None:
    data = b"email,name\nana@example.org,Ana\nbob@example.org,Bob\nrene@example.org,Ren\xe9\n"
    message = refused(data)
    assert "UTF-8" in message
    assert "line 4" in message


@pytest.mark.parametrize(
    "data",
    [
        b"email\x00\x01\x02\xff\xfe garbage",
        b"PK\x03\x04\x14\x00\x06\x00\x08\x00 spreadsheet",  # .xlsx is a zip file
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 old excel",  # .xls
        b"email\nana@example.org\n\x00\x00\x00\x00",
    ],
)
def test_binary_data_is_refused(data: bytes) -> None:
    assert "binary" in refused(data)


def test_binary_data_is_refused_from_a_stream_that_cannot_seek() -> None:
    stream = io.BufferedReader(Unseekable(b"email\nana@example.org\n\x00\x00garbage\n"))
    assert "binary" in refused(stream)


def test_utf8_bom_is_accepted() -> None:
    rows, report = read(b"\xef\xbb\xbfemail,name\nana@example.org,Ana\n")
    assert [row.email for row in rows] == ["ana@example.org"]
    assert report.rejected == []


def test_the_callers_stream_is_left_open() -> None:
    stream = io.BytesIO(b"email\nana@example.org\n")
    list(read_rows(stream, ImportReport()))
    assert not stream.closed


# --- rows -----------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_line_numbers_and_reasons() -> None:
    rows, report = read(
        b"email,name,language\n"  # line 1
        b"ana@example.org,Ana,es\n"  # 2
        b"not-an-address,Bob,en\n"  # 3
        b"carla@example.org,Carla\n"  # 4: two fields
        b"dan@example.org,Dan,english\n"  # 5
        b"eve@example.org,Eve,en,extra\n"  # 6: four fields
        b"fay@example,Fay,en\n"  # 7: no TLD
        b"gus@example.org,Gus,AR\n"  # 8
    )

    assert [(row.line, row.email) for row in rows] == [
        (2, "ana@example.org"),
        (8, "gus@example.org"),
    ]
    rejected = {item.line: item for item in report.rejected}
    assert sorted(rejected) == [3, 4, 5, 6, 7]
    assert rejected[3].email == "not-an-address"
    assert rejected[3].reason.startswith("invalid address")
    assert rejected[4].reason == "has 2 fields, the header has 3"
    assert rejected[5].email == "dan@example.org"
    assert "language" in rejected[5].reason and "english" in rejected[5].reason
    assert rejected[6].reason == "has 4 fields, the header has 3"
    assert rejected[7].reason.startswith("invalid address")


@pytest.mark.parametrize("language", ["e", "english", "en_GB", "12", "fr-"])
def test_bad_language_codes_are_rejected(language: str) -> None:
    rows, report = read(f"email,language\nana@example.org,{language}\n".encode())
    assert rows == []
    assert [(item.line, item.email) for item in report.rejected] == [(2, "ana@example.org")]
    assert "language" in report.rejected[0].reason


@pytest.mark.parametrize(("given", "kept"), [("EN", "en"), ("pt-BR", "pt-br"), ("ckb", "ckb")])
def test_good_language_codes_are_lower_cased(given: str, kept: str) -> None:
    rows, _ = read(f"email,language\nana@example.org,{given}\n".encode())
    assert rows[0].language == kept


def test_overlong_name_is_rejected() -> None:
    rows, report = read(f"email,name\nana@example.org,{'x' * 201}\n".encode())
    assert rows == []
    assert report.rejected[0].line == 2


def test_extra_columns_are_kept_in_attributes() -> None:
    rows, _ = read(
        "email,name,Country,Member since,Notes\n"
        "ana@example.org,Ana,Perú,2019,\n"
        "bob@example.org,Bob,, ,\n".encode()
    )
    assert rows[0].attributes == {"Country": "Perú", "Member since": "2019"}
    assert rows[1].attributes == {}


def test_quoted_field_with_a_newline_keeps_later_line_numbers_right() -> None:
    rows, report = read(
        b"email,name,organization\r\n"  # 1
        b'ana@example.org,Ana,"Red de Migrantes\r\n'  # 2
        b'Oficina Lima"\r\n'  # 3
        b"not-an-address,Bob,\r\n"  # 4
        b"carla@example.org,Carla,\r\n"  # 5
    )

    assert rows[0].email == "ana@example.org"
    assert rows[0].organization == "Red de Migrantes\r\nOficina Lima"
    assert [(item.line, item.email) for item in report.rejected] == [(4, "not-an-address")]
    assert (rows[1].line, rows[1].email) == (5, "carla@example.org")


def test_blank_lines_are_skipped_not_rejected() -> None:
    rows, report = read(
        b"email,name\n"  # 1
        b"\n"  # 2
        b"ana@example.org,Ana\n"  # 3
        b"   \n"  # 4
        b",\n"  # 5
        b"\r\n"  # 6
        b"bob@example.org,Bob\n"  # 7
        b"\n\n"
    )
    assert [(row.line, row.email) for row in rows] == [
        (3, "ana@example.org"),
        (7, "bob@example.org"),
    ]
    assert report.rejected == []


def test_unterminated_quote_is_reported_not_fatal() -> None:
    rows, report = read(b'email,name\nana@example.org,Ana\nbob@example.org,"Bob\n')
    assert [row.email for row in rows] == ["ana@example.org"]
    assert len(report.rejected) == 1
    assert "CSV" in report.rejected[0].reason


def test_semicolon_separated_file_is_refused_with_a_hint_about_the_header() -> None:
    # Excel in many locales saves "CSV" with semicolons; the header then has no `email` column.
    assert "email" in refused(b"email;name\nana@example.org;Ana\n")


# --- the checking pass ----------------------------------------------------------------------


def test_a_character_cut_by_a_block_boundary_is_not_an_error(monkeypatch) -> None:
    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "BLOCK", 7)  # "é" is two bytes: some block ends inside one
    data = "email,name\nana@example.org,Zoé Éluard\nbob@example.org,Bébé\n".encode()
    assert importer.check_file(io.BytesIO(data)) == len(data)


def test_a_bad_byte_far_into_the_file_names_its_line(monkeypatch) -> None:
    from circulars.subscribers import importer

    monkeypatch.setattr(importer, "BLOCK", 64)
    data = b"email\n" + b"".join(b"p%d@example.org\n" % i for i in range(500)) + b"z\xe9@x.org\n"
    message = refused(data)
    assert "line 502" in message


def test_a_file_cut_in_the_middle_of_a_character_is_refused() -> None:
    data = "email\nzoé".encode()
    assert "line 2" in refused(data[:-1])  # the last byte of "é" is missing


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"%PDF-1.4\n", "PDF"),
        (b"PK\x03\x04rest", "ZIP"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        ("email\n".encode("utf-16-le").join([b"\xff\xfe", b""]), "UTF-16"),
    ],
)
def test_known_binary_formats_are_named(data: bytes, what: str) -> None:
    assert what in refused(data)


def test_the_checking_pass_leaves_the_stream_where_it_was() -> None:
    from circulars.subscribers.importer import check_file

    stream = io.BytesIO(b"xxemail\na@example.org\n")
    stream.seek(2)
    check_file(stream)
    assert stream.tell() == 2


# --- addresses ------------------------------------------------------------------------------

ADDRESSES = [
    "ana@example.org",
    "Ana.Perez@Example.ORG",
    "a+tag@sub.example.org",
    "o'brien@example.org",
    "x@example.org.",
    "ana@localhost",
    "ana@example",
    "ana@test.test",
    "ana@invalid",
    "a..b@example.org",
    ".a@example.org",
    "a.@example.org",
    "a" * 64 + "@example.org",
    "a" * 65 + "@example.org",
    "a@" + "b" * 64 + ".org",
    "a@" + ".".join(["b" * 60] * 5) + ".org",
    "a@-example.org",
    "a@example-.org",
    "a@exa_mple.org",
    "a@123.456",
    "a@[127.0.0.1]",
    '"quoted"@example.org',
    "zoé@example.org",
    "zoe\u0301@example.org",
    "ana@bücher.example.org",
    "ana@xn--bcher-kva.example.org",
    "ANA@XN--BCHER-KVA.EXAMPLE.ORG",
    "a b@example.org",
    "a@b@example.org",
    "@example.org",
    "ana@",
    "ana",
    "",
    "ana@example.org\u200b",
    " ana@example.org ",
    "ana@example.org\t",
    "ana@example.local",
    "ana@host.onion",
    "ana@sub..example.org",
    "ana@.example.org",
    "a/b=c?d^e`f{g}h|i~j@example.org",
    "a#b$c%d&e*f@example.org",
    "a(b)@example.org",
    "a,b@example.org",
    "a;b@example.org",
    "a\\b@example.org",
    "ana\u00a0@example.org",
    "ana\uff20example.org",
    "ａna@example.org",
    "ana@exam\u0131ple.org",
    "ana@EXAMPLE.ORG.",
    "ana@a.b",
    "ana@example.c0m",
    "ana@example.123",
    "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".cd",
    "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".cde",
    "ana@" + "b" * 63 + ".org",
    "ana@" + "b" * 63 + "x.org",
]


@pytest.mark.parametrize("raw", ADDRESSES)
def test_the_fast_path_gives_what_email_validator_gives(raw: str) -> None:
    from circulars.subscribers.addresses import InvalidAddress, normalise_email
    from circulars.subscribers.importer import fast_normalise

    try:
        expected: str | tuple[str, str] = normalise_email(raw)
    except InvalidAddress as exc:
        expected = ("error", str(exc))
    try:
        got: str | tuple[str, str] = fast_normalise(raw)
    except InvalidAddress as exc:
        got = ("error", str(exc))
    assert got == expected


# --- de-duplication -------------------------------------------------------------------------


def test_seen_addresses_remember_the_first_line() -> None:
    from circulars.subscribers.importer import SeenAddresses

    seen = SeenAddresses()
    try:
        first = seen.first_lines(
            [Row(2, "a@x.org", "", "en", "", {}), Row(3, "b@x.org", "", "en", "", {}),
             Row(4, "a@x.org", "", "en", "", {})]
        )  # fmt: skip
        assert first == {"a@x.org": 2, "b@x.org": 3}
        later = seen.first_lines(
            [Row(9, "b@x.org", "", "en", "", {}), Row(10, "c@x.org", "", "en", "", {})]
        )
        assert later == {"b@x.org": 3, "c@x.org": 10}
    finally:
        seen.close()

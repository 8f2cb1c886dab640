"""Display names for uploads and the content-addressed file store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from circulars.storage import EmptyUpload, FileStore, UploadTooLarge, format_size, safe_filename

# --- safe_filename --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\ana\\Documents\\Statement.docx", "Statement.docx"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/var/tmp/minutes.odt", "minutes.odt"),
        (".bashrc", "bashrc"),
        ("...hidden.pdf", "hidden.pdf"),
        ("  spaced   out   name.pdf ", "spaced out name.pdf"),
        ("Déclaration – 2017.pdf", "Déclaration – 2017.pdf"),
        ("بيان ختامي.pdf", "بيان ختامي.pdf"),
        ("Заявление.pdf", "Заявление.pdf"),
        ("声明.pdf", "声明.pdf"),
    ],
)
def test_safe_filename_keeps_the_last_component(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


def test_safe_filename_normalises_to_nfc() -> None:
    decomposed = "De\u0301claration.pdf"
    assert safe_filename(decomposed) == "D\u00e9claration.pdf"


@pytest.mark.parametrize(
    "raw",
    [
        "invoice\u202efdp.exe",  # RIGHT-TO-LEFT OVERRIDE shows as "invoiceexe.pdf"
        "invoice\u2067fdp.exe",  # RIGHT-TO-LEFT ISOLATE
        "invoice\u200ffdp.exe",  # RIGHT-TO-LEFT MARK
        "invoice\x00fdp.exe",
        "invoice\r\nfdp.exe",
        "invoice\x1bfdp.exe",
        "invoice\x7ffdp.exe",
    ],
)
def test_safe_filename_removes_control_and_bidi_characters(raw: str) -> None:
    name = safe_filename(raw)
    assert all(ord(char) >= 0x20 and char != "\x7f" for char in name)
    for char in "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert char not in name
    # The real extension stays at the end, where a reader looks for it.
    assert name.startswith("invoice")
    assert name.endswith("fdp.exe")


@pytest.mark.parametrize("raw", ['a"b.pdf', "a<b>.pdf", "a|b?.pdf", "a*b:.pdf"])
def test_safe_filename_removes_characters_unsafe_in_paths_and_headers(raw: str) -> None:
    name = safe_filename(raw)
    assert not set(name) & set('"<>|?*:/\\')
    assert name.startswith("a")
    assert name.endswith(".pdf")


def test_safe_filename_trims_long_names_keeping_the_extension() -> None:
    name = safe_filename("Statement of the regional consultation " * 10 + ".pdf")
    assert len(name) <= 180
    assert name.endswith(".pdf")
    assert name.startswith("Statement of the regional consultation")


def test_safe_filename_trims_long_non_ascii_names_keeping_the_extension() -> None:
    name = safe_filename("بيان " * 60 + ".docx")
    assert len(name) <= 180
    assert name.endswith(".docx")


def test_safe_filename_trims_a_long_name_without_extension() -> None:
    assert len(safe_filename("x" * 500)) <= 180


@pytest.mark.parametrize("raw", ["", "   ", "...", "/", "C:\\docs\\", "\x00\x01", "\u202e"])
def test_safe_filename_falls_back_when_nothing_is_left(raw: str) -> None:
    assert safe_filename(raw) == "attachment"


def test_safe_filename_fallback_can_be_chosen() -> None:
    assert safe_filename("", fallback="document") == "document"


# --- FileStore ------------------------------------------------------------------------------


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_save_stores_the_file_under_its_sha256(tmp_path: Path) -> None:
    data = b"%PDF-1.7 statement of the consultation\n" * 100
    store = FileStore(tmp_path / "uploads", max_size=1024 * 1024)

    stored = store.save(io.BytesIO(data), "Statement.pdf")

    sha = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == sha
    assert stored.size == len(data)
    assert stored.filename == "Statement.pdf"
    assert store.path_for(sha) == tmp_path / "uploads" / sha[:2] / sha[2:4] / sha
    assert store.path_for(sha).read_bytes() == data
    assert store.read(sha) == data
    assert files_under(tmp_path / "uploads") == [store.path_for(sha)]


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=1024)

    first = store.save(io.BytesIO(b"same bytes"), "a.txt")
    second = store.save(io.BytesIO(b"same bytes"), "copy of a.pdf")

    assert first.sha256 == second.sha256
    assert (first.filename, second.filename) == ("a.txt", "copy of a.pdf")
    assert files_under(tmp_path) == [store.path_for(first.sha256)]


def test_different_content_is_stored_separately(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=1024)

    one = store.save(io.BytesIO(b"one"), "a.txt")
    two = store.save(io.BytesIO(b"two"), "a.txt")

    assert one.sha256 != two.sha256
    assert len(files_under(tmp_path)) == 2


def test_file_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=10)
    assert store.save(io.BytesIO(b"0123456789"), "ten.bin").size == 10


@pytest.mark.parametrize("size", [11, 3 * (1 << 20)])
def test_over_limit_upload_is_refused_and_leaves_nothing(tmp_path: Path, size: int) -> None:
    limit = 10 if size == 11 else 2 * (1 << 20)
    store = FileStore(tmp_path / "uploads", max_size=limit)

    with pytest.raises(UploadTooLarge, match=r"limit of"):
        store.save(io.BytesIO(b"x" * size), "big.pdf")

    assert files_under(tmp_path) == []


def test_empty_upload_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=1024)

    with pytest.raises(EmptyUpload):
        store.save(io.BytesIO(b""), "empty.pdf")

    assert files_under(tmp_path) == []


def test_failed_upload_does_not_disturb_stored_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=10)
    kept = store.save(io.BytesIO(b"kept"), "kept.txt")

    with pytest.raises(UploadTooLarge):
        store.save(io.BytesIO(b"x" * 11), "big.txt")

    assert files_under(tmp_path) == [store.path_for(kept.sha256)]


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Statement.pdf", "application/pdf"),
        ("photo.JPG", "image/jpeg"),
        ("notes.txt", "text/plain"),
        ("table.csv", "text/csv"),
    ],
)
def test_content_type_is_guessed_from_the_name(
    filename: str, expected: str, tmp_path: Path
) -> None:
    store = FileStore(tmp_path, max_size=1024)
    assert store.save(io.BytesIO(b"data"), filename, "text/html").content_type == expected


@pytest.mark.parametrize(
    "client_type", ["text/html\r\nX-Injected: y", "text/html; charset=utf-8", "../../x", "", None]
)
def test_bogus_client_content_type_is_ignored(tmp_path: Path, client_type: str | None) -> None:
    store = FileStore(tmp_path, max_size=1024)
    stored = store.save(io.BytesIO(b"data"), "no-extension", client_type)
    assert stored.content_type == "application/octet-stream"


def test_well_formed_client_content_type_is_used_when_the_name_says_nothing(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path, max_size=1024)
    stored = store.save(io.BytesIO(b"data"), "no-extension", "Application/Vnd.Example+JSON")
    assert stored.content_type == "application/vnd.example+json"


def test_saved_filename_is_made_safe(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_size=1024)
    stored = store.save(io.BytesIO(b"data"), "C:\\fakepath\\..\\invoice\u202efdp.exe")
    assert stored.filename == "invoice_fdp.exe"


@pytest.mark.parametrize("bad", ["", "abc", "../" + "0" * 61, "A" * 64, "0" * 63])
def test_path_for_refuses_anything_but_a_digest(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        FileStore(tmp_path, max_size=1).path_for(bad)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KB"),
        (12345, "12.1 KB"),
        (25 * 1024**2, "25.0 MB"),
        (3 * 1024**3, "3.0 GB"),
    ],
)
def test_format_size(size: int, expected: str) -> None:
    assert format_size(size) == expected

"""Uploaded files, stored once on disk under their SHA-256 and named safely for display."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class UploadTooLarge(ValueError):
    pass


class EmptyUpload(ValueError):
    pass


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    filename: str
    content_type: str


_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*\u200e\u200f\u202a-\u202e\u2066-\u2069]')


def safe_filename(raw: str, fallback: str = "attachment") -> str:
    """A display name that is safe in a header, a path and a page, keeping non-ASCII letters.

    Browsers send a bare name or a Windows path; we keep the last component, drop
    control and bidi-override characters (which can disguise `exe.pdf` as `fdp.exe`),
    and keep the extension when trimming.
    """
    name = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    name = re.sub(r"\s+", " ", name)
    if not name or set(name) <= {"_", " ", "."}:
        return fallback
    if len(name) > 180:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[: 179 - len(ext)]}.{ext}" if dot and 0 < len(ext) <= 10 else name[:180]
    return name


class FileStore:
    """Content-addressed files: the same document attached twice is stored once."""

    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size

    def path_for(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def save(self, stream: IO[bytes], filename: str, content_type: str | None = None) -> StoredFile:
        """Stream to a temporary file while hashing; refuse past the size limit, keep nothing."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > self.max_size:
                        raise UploadTooLarge(
                            f"The file is larger than the limit of {format_size(self.max_size)}."
                        )
                    digest.update(chunk)
                    tmp.write(chunk)
            if size == 0:
                raise EmptyUpload("The file is empty.")
            sha = digest.hexdigest()
            target = self.path_for(sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        name = safe_filename(filename)
        # Our own guess from the name first; the browser's word only if it is well formed.
        guessed = mimetypes.guess_type(name)[0]
        if not guessed and content_type and _MIME_TYPE.fullmatch(content_type.lower()):
            guessed = content_type.lower()
        return StoredFile(sha, size, name, guessed or "application/octet-stream")

    def read(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"

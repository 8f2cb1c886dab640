"""DKIM keys and signatures (RFC 6376, Ed25519 per RFC 8463), built here rather than by dkimpy.

dkimpy is the reference we verify against, but its signer does RSA in pure
Python (about 6.6 ms per 137 KB message). Here the body is canonicalised
relaxed, hashed once for every key, the header hash is built by hand and the
signature comes from `cryptography` (0.2 ms for RSA-2048). The result is
what `dkim.verify` accepts; the tests check that for both algorithms.

Keys are files, never database rows: `<key_dir>/<selector>.<algorithm>.pem`
(PKCS#8, mode 0600). One selector has one key, since one DNS record
(`<selector>._domainkey.<domain>`) publishes one public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .transport import Connection, Messenger

ALGORITHMS = ("rsa", "ed25519")
SELECTOR_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

#: Signed when present, in this order (RFC 6376 5.4.1; RFC 8058 requires the List-Unsubscribe pair).
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-help",
    "list-post",
    "list-owner",
    "list-archive",
    "auto-submitted",
    "precedence",
    "feedback-id",
)
#: Signed once more than present, so adding one more of these breaks the signature.
OVERSIGNED = frozenset({"from", "subject", "list-unsubscribe", "list-unsubscribe-post"})

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class DkimKeyError(ValueError):
    """A key file is missing, unreadable, ambiguous or of the wrong kind."""


@dataclass(frozen=True)
class DkimKey:
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    private_key: PrivateKey

    @property
    def signature_algorithm(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    def public_key_b64(self) -> str:
        """The p= value: DER SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519."""
        public = self.private_key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode("ascii")

    def dns_value(self) -> str:
        """The TXT record's text, as `dkim.verify` and receivers read it."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key_b64()}"

    def dns_name(self, domain: str) -> str:
        return f"{self.selector}._domainkey.{domain}"

    def dns_record(self, domain: str) -> str:
        """A zone-file line; long RSA values are split into 255-byte strings, as DNS needs."""
        value = self.dns_value()
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
        quoted = " ".join(f'"{chunk}"' for chunk in chunks)
        return f"{self.dns_name(domain)} TXT {quoted}"

    def sign(self, data: bytes) -> bytes:
        """The b= bytes for the header hash input `data` (RFC 8463: Ed25519 signs its SHA-256)."""
        key = self.private_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(hashlib.sha256(data).digest())
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def check_selector(selector: str) -> str:
    if not SELECTOR_RE.fullmatch(selector):
        raise DkimKeyError(
            f"{selector!r} is not a valid selector: letters, digits and inner hyphens, "
            "at most 63 characters"
        )
    return selector


def key_path(key_dir: Path, selector: str, algorithm: str) -> Path:
    return key_dir / f"{check_selector(selector)}.{algorithm}.pem"


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise DkimKeyError(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")


def write_key(key_dir: Path, selector: str, algorithm: str, *, force: bool = False) -> DkimKey:
    """Generate a key and write it with mode 0600; refuses to replace a key unless `force`.

    A selector already holding a key of the other algorithm is refused too:
    its DNS record publishes that key, and signatures would stop verifying.
    """
    path = key_path(key_dir, selector, algorithm)
    others = [key_path(key_dir, selector, other) for other in ALGORITHMS if other != algorithm]
    existing = [p for p in [path, *others] if p.exists()]
    if existing and not force:
        raise DkimKeyError(
            f"{existing[0]} already exists; use another selector, or --force to replace it "
            "(and then publish the new DNS record)"
        )
    key = generate_private_key(algorithm)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not key_dir.exists():
        # A directory we create is ours alone; one the operator chose keeps its mode.
        key_dir.mkdir(parents=True)
        os.chmod(key_dir, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, path)
    for other in others:
        if other.exists():
            other.unlink()
    return DkimKey(selector, algorithm, key)


def load_key(key_dir: Path, selector: str) -> DkimKey:
    """The one key file of `selector`, whichever algorithm it is."""
    found = [(alg, key_path(key_dir, selector, alg)) for alg in ALGORITHMS]
    found = [(alg, path) for alg, path in found if path.exists()]
    if not found:
        raise DkimKeyError(
            f"no key for selector {selector!r} in {key_dir}; "
            f"create one with `circulars dkim generate --selector {selector}`"
        )
    if len(found) > 1:
        raise DkimKeyError(f"selector {selector!r} has both an RSA and an Ed25519 key in {key_dir}")
    algorithm, path = found[0]
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DkimKeyError(f"cannot read {path}: {exc}") from exc
    expected = rsa.RSAPrivateKey if algorithm == "rsa" else ed25519.Ed25519PrivateKey
    if not isinstance(key, expected):
        raise DkimKeyError(f"{path} does not hold an {algorithm} key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 1024:
        raise DkimKeyError(f"{path}: RSA keys under 1024 bits are refused by receivers")
    return DkimKey(selector, algorithm, key)


def load_keys(key_dir: Path, selectors: Sequence[str]) -> list[DkimKey]:
    return [load_key(key_dir, selector) for selector in selectors]


# --- canonicalisation (RFC 6376 3.4.2 and 3.4.4, relaxed) --------------------------------

_FIELD_SPLIT = re.compile(rb"\r\n(?![\t ])")


def _compress_wsp(data: bytes) -> bytes:
    """Every run of spaces and tabs to one space.

    A regular expression is ten times slower here, and repeating
    `replace(b"  ", b" ")` until no pair is left scans the whole body once per
    halving of the longest run (four times for the indentation of our HTML):
    finding each run and copying around it scans once.
    """
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    start = data.find(b"  ")
    if start < 0:
        return data
    pieces = []
    kept = 0
    size = len(data)
    while start >= 0:
        end = start + 2
        while end < size and data[end] == 0x20:
            end += 1
        pieces.append(data[kept : start + 1])
        kept = end
        start = data.find(b"  ", end)
    pieces.append(data[kept:])
    return b"".join(pieces)


def canonical_body(body: bytes) -> bytes:
    """Relaxed body canonicalisation, byte for byte what dkimpy computes.

    It works line by line, so everything after the last line holding a space
    or a tab (the base64 of attachments, most of a large message) is already
    canonical and is left alone. In the rest, with runs of white space
    compressed first, white space at a line's end is one space before CRLF:
    plain byte replacements do it all, several times faster than a regular
    expression stepping through every space of the HTML.
    """
    last = max(body.rfind(b" "), body.rfind(b"\t"))
    if last < 0:
        return _trailing_lines(body)
    line_end = body.find(b"\r\n", last)
    cut = len(body) if line_end < 0 else line_end + 2
    head = _compress_wsp(body[:cut])
    if b" \r\n" in head:
        head = head.replace(b" \r\n", b"\r\n")
    return _trailing_lines(head + body[cut:])


def _trailing_lines(text: bytes) -> bytes:
    # Ignore empty lines at the end; the body then ends with one CRLF (an empty body: nothing).
    end = len(text)
    while end >= 2 and text[end - 2 : end] == b"\r\n":
        end -= 2
    result = text[:end] + b"\r\n"
    return b"" if result == b"\r\n" else result


def crlf_lines(message: bytes) -> bytes:
    """`message` with every line ending CRLF, as SMTP carries it and verifiers hash it.

    Only the part up to the last line holding a space or tab is checked: what
    follows is base64 that the MIME builder wrote with CRLF, and counting line
    ends over 100 KB of it would cost more than the signature.
    """
    last = max(message.rfind(b" "), message.rfind(b"\t"))
    line_end = message.find(b"\n", last) if last >= 0 else -1
    checked = message if line_end < 0 else message[: line_end + 1]
    if checked.count(b"\n") == checked.count(b"\r\n"):
        return message
    return re.sub(rb"\r?\n", b"\r\n", message)


def canonical_header(name: bytes, value: bytes) -> bytes:
    """`name:value` relaxed: lower-case name, unfolded, runs of WSP to one space, trimmed."""
    value = _compress_wsp(value.replace(b"\r\n", b"").replace(b"\n", b"")).strip()
    return name.lower().rstrip() + b":" + value


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, raw value) in order, and the body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, body = message.rstrip(b"\r\n"), b""
    fields = []
    for raw in _FIELD_SPLIT.split(head):
        name, colon, value = raw.partition(b":")
        if colon:
            fields.append((name, value))
    return fields, body


def _fold_list(prefix: str, items: Sequence[str], sep: str, width: int = 76) -> str:
    """`prefix` + items joined by `sep`, folded between items (CRLF + space)."""
    lines = [prefix]
    for index, item in enumerate(items):
        piece = item + (sep if index < len(items) - 1 else "")
        if len(lines[-1]) + len(piece) > width and lines[-1].strip():
            lines.append(" ")
        lines[-1] += piece
    return "\r\n".join(lines)


class DkimSigner:
    """Signs messages for one domain with one or more keys (RSA and Ed25519 side by side).

    `sign(message)` returns the message with the DKIM-Signature fields prepended.
    The body hash is computed once per message, whatever the number of keys.
    """

    def __init__(
        self,
        domain: str,
        keys: Sequence[DkimKey],
        *,
        signed_headers: Sequence[str] = SIGNED_HEADERS,
        oversigned: frozenset[str] = OVERSIGNED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise DkimKeyError("a signer needs at least one key")
        self.domain = domain.encode("idna").decode("ascii")
        self.keys = list(keys)
        self.signed_headers = [name.lower() for name in signed_headers]
        self.oversigned = oversigned
        self.clock = clock

    def header_names(self, fields: Sequence[tuple[bytes, bytes]]) -> list[str]:
        """The h= list: each wanted field as often as present (+1 when oversigned)."""
        counts: dict[str, int] = {}
        for raw_name, _ in fields:
            key = raw_name.decode("ascii", "replace").strip().lower()
            counts[key] = counts.get(key, 0) + 1
        names: list[str] = []
        for name in self.signed_headers:
            count = counts.get(name, 0) + (1 if name in self.oversigned else 0)
            names.extend([name] * count)
        if "from" not in names:
            raise ValueError("a message without From cannot be DKIM-signed")
        return names

    def signature_fields(self, message: bytes) -> bytes:
        """The DKIM-Signature header fields (CRLF-terminated) for `message`."""
        fields, body = split_message(message)
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest()).decode()
        names = self.header_names(fields)
        # Pick the fields bottom-up, as verifiers do (RFC 6376 5.4.2).
        remaining: dict[str, list[tuple[bytes, bytes]]] = {}
        for raw_name, raw_value in fields:
            remaining.setdefault(raw_name.strip().lower().decode("ascii", "replace"), []).append(
                (raw_name, raw_value)
            )
        hashed = bytearray()
        for name in names:
            instances = remaining.get(name)
            if instances:
                field_name, value = instances.pop()
                hashed += canonical_header(field_name, value) + b"\r\n"
        hashed_headers = bytes(hashed)
        timestamp = int(self.clock())
        out = []
        for key in self.keys:
            head = (
                f"DKIM-Signature: v=1; a={key.signature_algorithm.decode()}; c=relaxed/relaxed;"
                f"\r\n d={self.domain}; s={key.selector}; t={timestamp};\r\n"
                + _fold_list(" h=", names, ":")
                + f";\r\n bh={body_hash};\r\n b="
            )
            sig_name, _, sig_value = head.partition(":")
            data = hashed_headers + canonical_header(sig_name.encode(), sig_value.encode())
            signature = base64.b64encode(key.sign(data)).decode("ascii")
            folded = "\r\n ".join(signature[i : i + 72] for i in range(0, len(signature), 72))
            out.append(f"{head}{folded}\r\n")
        # The last key's signature goes on top; order does not matter to verifiers.
        return "".join(reversed(out)).encode("ascii")

    def sign(self, message: bytes) -> bytes:
        """The message, its line ends made CRLF if they were not, with the signatures on top."""
        message = crlf_lines(message)
        return self.signature_fields(message) + message


class SigningConnection:
    """A transport connection that signs each message just before handing it over."""

    def __init__(self, inner: Connection, signer: DkimSigner) -> None:
        self.inner = inner
        self.signer = signer

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
        self.inner.send(envelope_from, recipient, self.signer.sign(message))

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> SigningConnection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SigningMessenger:
    """Wraps a Messenger so every message through it is signed: circulars, tests, welcomes."""

    def __init__(self, inner: Messenger, signer: DkimSigner) -> None:
        self.inner = inner
        self.signer = signer

    def connect(self) -> SigningConnection:
        return SigningConnection(self.inner.connect(), self.signer)


def signing_messenger(inner: Messenger, signer: DkimSigner | None) -> Messenger:
    """`inner` itself when no key is configured (no signature, as before)."""
    return inner if signer is None else SigningMessenger(inner, signer)

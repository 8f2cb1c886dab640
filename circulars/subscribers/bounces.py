"""Bounces and complaints: read what came back, say what it means, act on it.

A returned message names its delivery through the VERP return path every
circular is sent with (`…-bounces+<delivery id>@domain`), so we know which
send and which subscriber it is about without trusting the (often mangled)
addresses inside a bounce. What it means comes from, in order: an ARF
feedback report (RFC 5965: a spam complaint), the machine-readable DSN fields
(RFC 3464: Action and Status per recipient), and for the many MTAs that write
prose instead, flufl.bounce's detectors plus any status code in the text.

Policy: a hard bounce or a complaint suppresses the address at once; soft
bounces only after `soft_limit` of them within `soft_window_days`; anything
else (auto-replies, garbage) is stored and ignored. Nothing here raises on bad
mail: a message that cannot be read is stored with kind `unknown`.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email import policy as email_policy
from pathlib import Path

from flufl.bounce import all_failures
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..models import Bounce, BounceKind, Delivery, DigestDelivery, SuppressionReason, utcnow
from .addresses import InvalidAddress, normalise_email
from .suppression import suppress

log = logging.getLogger(__name__)

# The local part the send engine writes: `<mail_from local>-bounces+<delivery id>`.
VERP_RE = re.compile(r"[^\s<>@\"',;:]*-bounces\+(\d{1,18})@[A-Za-z0-9.\-]+", re.IGNORECASE)
# A digest's: `<local>-bounces+d<digest delivery id>` (circulars/digests/runs.py).
DIGEST_VERP_RE = re.compile(r"[^\s<>@\"',;:]*-bounces\+d(\d{1,18})@[A-Za-z0-9.\-]+", re.IGNORECASE)
STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Headers that may carry the address a bounce was delivered to, most reliable first.
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
# Generous, but bounded: a "bounce" bigger than this is not one and is kept truncated.
# Where prose bounces (Exim, qmail, ...) start quoting the original message.
ORIGINAL_COPY_RE = re.compile(
    r"^-+ ?(This is a copy of|Below this line is a copy|Original message)", re.I | re.M
)
MAX_RAW_SIZE = 10 * 1024 * 1024
DIAGNOSTIC_MAX = 1000


@dataclass(frozen=True)
class BouncePolicy:
    """How many soft bounces in how many days make an address suppressed."""

    soft_limit: int = 3
    soft_window_days: int = 14


@dataclass(frozen=True)
class Classification:
    """What a returned message says: the kind, the failed address, code and reason."""

    kind: BounceKind
    email: str = ""
    status_code: str = ""
    diagnostic: str = ""
    delivery_id: int | None = None


# --- reading -----------------------------------------------------------------------------


def parse_message(raw: bytes) -> email.message.Message | None:
    """The message as the email package reads it (compat32, as flufl.bounce expects).

    The parser is lenient and rarely raises, but bytes that are not mail at all
    (empty, binary) give None so callers need not guess.
    """
    if not raw or not raw.strip():
        return None
    try:
        message = email.message_from_bytes(raw, policy=email_policy.compat32)
    except Exception:  # noqa: BLE001 - any parser failure means "not readable mail"
        return None
    if not message.keys():
        return None
    return message


def verp_delivery_id(text: str, pattern: re.Pattern[str] = VERP_RE) -> int | None:
    """The delivery id named by a VERP address anywhere in `text`, or None."""
    match = pattern.search(text or "")
    return int(match.group(1)) if match else None


def _header_text(message: email.message.Message, name: str) -> str:
    values = message.get_all(name) or []
    return " ".join(str(value) for value in values)


def _embedded_messages(message: email.message.Message) -> list[email.message.Message]:
    """The returned original (message/rfc822 or text/rfc822-headers) parts, if any."""
    found: list[email.message.Message] = []
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                found.extend(p for p in payload if isinstance(p, email.message.Message))
        elif ctype == "text/rfc822-headers":
            text = _part_text(part)
            if text:
                found.append(email.message_from_string(text, policy=email_policy.compat32))
    return found


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def find_delivery_id(
    message: email.message.Message | None,
    envelope_recipients: Sequence[str] = (),
    pattern: re.Pattern[str] = VERP_RE,
) -> int | None:
    """The delivery this message is about: envelope recipient first, then headers.

    A bounce goes to the return path, so the envelope recipient (from our own
    receiver) or the delivery headers a mailbox adds hold the VERP address. For
    complaints and some forwarded bounces, the returned original's own
    Return-Path or To names it instead.
    """
    for recipient in envelope_recipients:
        found = verp_delivery_id(recipient, pattern)
        if found is not None:
            return found
    if message is None:
        return None
    for name in RECIPIENT_HEADERS:
        found = verp_delivery_id(_header_text(message, name), pattern)
        if found is not None:
            return found
    for original in _embedded_messages(message):
        for name in ("Return-Path", "X-Circulars-Delivery", "Sender", "To"):
            found = verp_delivery_id(_header_text(original, name), pattern)
            if found is not None:
                return found
    return None


def _address_of(value: str) -> str:
    """`rfc822; someone@example.org` or `<someone@example.org>` → the bare address."""
    value = value.split(";", 1)[-1].strip().strip("<>").strip()
    _, address = email.utils.parseaddr(value)
    return address or value


def _status_code(text: str) -> str:
    match = STATUS_RE.search(text or "")
    return ".".join(match.groups()) if match else ""


def _squash(text: str) -> str:
    return " ".join((text or "").split())[:DIAGNOSTIC_MAX]


# --- classification ----------------------------------------------------------------------


def _classify_arf(message: email.message.Message) -> Classification | None:
    """RFC 5965 feedback report: `abuse` is a spam complaint; other types are ignored."""
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type") or "").lower() != "feedback-report":
        return None
    fields: email.message.Message | None = None
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                first = payload[0]
                fields = first if isinstance(first, email.message.Message) else None
            elif isinstance(payload, str):
                fields = email.message_from_string(payload, policy=email_policy.compat32)
            break
    if fields is None:
        return Classification(BounceKind.UNKNOWN, diagnostic="feedback report without fields")
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    recipient = _address_of(str(fields.get("Original-Rcpt-To", "")))
    if not recipient:
        for original in _embedded_messages(message):
            recipient = _address_of(str(original.get("To", "")))
            if recipient:
                break
    agent = str(fields.get("User-Agent", "")).strip()
    diagnostic = _squash(
        f"Feedback-Type: {feedback_type or '?'}" + (f" from {agent}" if agent else "")
    )
    kind = BounceKind.COMPLAINT if feedback_type == "abuse" else BounceKind.UNKNOWN
    return Classification(kind, email=recipient, diagnostic=diagnostic)


def _classify_dsn(message: email.message.Message) -> Classification | None:
    """RFC 3464: the per-recipient Action and Status fields decide, worst first."""
    if message.get_content_type() != "multipart/report":
        return None
    blocks: list[email.message.Message] = []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                blocks = [b for b in payload if isinstance(b, email.message.Message)]
            break
    found: list[Classification] = []
    for block in blocks[1:] or blocks:
        action = str(block.get("Action", "")).strip().lower()
        status = _status_code(str(block.get("Status", "")))
        recipient = _address_of(
            str(block.get("Final-Recipient", "") or block.get("Original-Recipient", ""))
        )
        diagnostic = _squash(str(block.get("Diagnostic-Code", "")).split(";", 1)[-1])
        if action == "failed":
            kind = BounceKind.SOFT if status.startswith("4") else BounceKind.HARD
        elif action == "delayed":
            kind = BounceKind.SOFT
        else:
            continue  # delivered, relayed, expanded: good news, not a bounce
        found.append(Classification(kind, recipient, status, diagnostic or action))
    if not found:
        return None
    order = {BounceKind.HARD: 0, BounceKind.SOFT: 1}
    return min(found, key=lambda c: order.get(c.kind, 2))


def _body_text(message: email.message.Message) -> str:
    texts = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            texts.append(_part_text(part))
        if sum(len(t) for t in texts) > 200_000:
            break
    text = "\n".join(texts)
    # The returned copy of our own circular says nothing about the failure.
    return ORIGINAL_COPY_RE.split(text, maxsplit=1)[0]


def _diagnostic_line(text: str, address: str, code: str) -> str:
    """The line of prose that best says why: the one with the code, else the address."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for needle in (code, address):
        if not needle:
            continue
        for index, line in enumerate(lines):
            if needle in line:
                following = lines[index + 1] if index + 1 < len(lines) else ""
                short = len(line) <= 40 and following and not following.startswith("-")
                joined = f"{line} {following}" if short else line
                return _squash(joined)
    return ""


def _is_auto_reply(message: email.message.Message) -> bool:
    """Vacation and out-of-office replies: mail from a person's robot, not a bounce.

    `Auto-Submitted: auto-replied` alone says nothing (Exim and Postfix put it on
    their bounces too), so the vacation headers and the subject decide.
    """
    subject = str(message.get("Subject", "")).lower()
    return bool(
        message.get("X-Autoreply")
        or message.get("X-Autorespond")
        or re.search(r"out of (the )?office|auto(matic)?[- ]?reply|absence", subject)
    )


def _classify_prose(message: email.message.Message) -> Classification | None:
    """MTAs that write a human-readable bounce: flufl.bounce finds the addresses."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # noqa: BLE001 - a detector choking on odd mail is not our crash
        log.warning("flufl.bounce failed on a message", exc_info=True)
        return None
    if not temporary and not permanent:
        return None
    text = _body_text(message)
    addresses = sorted(permanent or temporary)
    address = addresses[0].decode("utf-8", errors="replace")
    code = _status_code(text)
    if permanent:
        # A detector's "permanent" loses to an explicit 4.x.x code in the text.
        kind = BounceKind.SOFT if code.startswith("4") else BounceKind.HARD
    else:
        kind = BounceKind.SOFT
    diagnostic = _diagnostic_line(text, address, code) or _squash(str(message.get("Subject", "")))
    return Classification(kind, address, code, diagnostic)


def classify(raw: bytes, envelope_recipients: Sequence[str] = ()) -> Classification:
    """Read a returned message and say what it is. Never raises."""
    try:
        return _classify(raw, envelope_recipients)
    except Exception as exc:  # noqa: BLE001 - garbage in, `unknown` out
        log.warning("could not classify a returned message", exc_info=True)
        return Classification(
            BounceKind.UNKNOWN,
            diagnostic=_squash(f"unreadable: {type(exc).__name__}"),
            delivery_id=_safe_delivery_id(envelope_recipients),
        )


def _safe_delivery_id(envelope_recipients: Sequence[str]) -> int | None:
    try:
        return find_delivery_id(None, envelope_recipients)
    except Exception:  # noqa: BLE001
        return None


def _classify(raw: bytes, envelope_recipients: Sequence[str]) -> Classification:
    message = parse_message(raw)
    delivery_id = find_delivery_id(message, envelope_recipients)
    if message is None:
        return Classification(
            BounceKind.UNKNOWN, diagnostic="not a mail message", delivery_id=delivery_id
        )
    result = _classify_arf(message) or _classify_dsn(message)
    if result is None and not _is_auto_reply(message):
        result = _classify_prose(message)
    if result is None:
        subject = _squash(str(message.get("Subject", "")))
        why = "auto-reply" if _is_auto_reply(message) else "not recognised as a bounce"
        result = Classification(BounceKind.UNKNOWN, diagnostic=f"{why}: {subject}"[:DIAGNOSTIC_MAX])
    return Classification(
        result.kind, result.email, result.status_code, result.diagnostic, delivery_id
    )


# --- storing and acting ------------------------------------------------------------------


def store_raw(directory: Path, raw: bytes) -> str:
    """Write the raw bytes under `directory` (by day), atomically; return the relative path.

    Names are random, so nothing a sender writes decides a path.
    """
    now = utcnow()
    relative = Path(now.strftime("%Y/%m/%d")) / f"{now:%H%M%S}-{secrets.token_hex(8)}.eml"
    target = directory / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw[:MAX_RAW_SIZE])
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return relative.as_posix()


def raw_file(directory: Path, raw_path: str) -> Path | None:
    """The stored file for a bounce row, only if it really lies under `directory`."""
    if not raw_path:
        return None
    base = directory.resolve()
    candidate = (base / raw_path).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def _normalised(address: str) -> str:
    try:
        return normalise_email(address)
    except InvalidAddress:
        return address.strip().lower()[:320]


def record(
    session: Session,
    raw: bytes,
    *,
    source: str,
    raw_dir: Path,
    envelope_recipients: Sequence[str] = (),
    policy: BouncePolicy | None = None,
    raw_path: str | None = None,
) -> Bounce:
    """Store one returned message, classify it and apply the policy; flushes, no commit.

    The delivery named by VERP decides the address acted upon (what we sent to),
    so a bounce that quotes someone else's address cannot suppress them. A
    message that names no delivery of ours is stored and ignored. Pass
    `raw_path` when the bytes are already stored.
    """
    policy = policy or BouncePolicy()
    if raw_path is None:
        raw_path = store_raw(raw_dir, raw)
    verdict = classify(raw, envelope_recipients)
    delivery = (
        session.get(Delivery, verdict.delivery_id) if verdict.delivery_id is not None else None
    )
    # A digest's bounce names its digest delivery instead (no Delivery row to point at).
    sent: Delivery | DigestDelivery | None = delivery
    if delivery is None:
        digest_id = find_delivery_id(parse_message(raw), envelope_recipients, DIGEST_VERP_RE)
        sent = session.get(DigestDelivery, digest_id) if digest_id is not None else None
    address = sent.email if sent is not None else verdict.email
    bounce = Bounce(
        received_at=utcnow(),
        delivery_id=delivery.id if delivery is not None else None,
        subscriber_id=sent.subscriber_id if sent is not None else None,
        email=_normalised(address) if address else "",
        kind=verdict.kind,
        status_code=verdict.status_code,
        diagnostic=verdict.diagnostic,
        source=source,
        raw_path=raw_path,
        processed=False,
    )
    session.add(bounce)
    session.flush()
    if sent is not None and bounce.email:
        bounce.processed = _apply_policy(session, bounce, policy)
    session.flush()
    return bounce


def _apply_policy(session: Session, bounce: Bounce, policy: BouncePolicy) -> bool:
    note = f"bounce #{bounce.id}: {bounce.status_code} {bounce.diagnostic}".strip()[:500]
    try:
        if bounce.kind == BounceKind.HARD:
            suppress(session, email=bounce.email, reason=SuppressionReason.HARD_BOUNCE, note=note)
        elif bounce.kind == BounceKind.COMPLAINT:
            suppress(session, email=bounce.email, reason=SuppressionReason.COMPLAINT, note=note)
        elif bounce.kind == BounceKind.SOFT:
            since = utcnow() - timedelta(days=policy.soft_window_days)
            count = session.scalar(
                select(func.count())
                .select_from(Bounce)
                .where(
                    Bounce.email == bounce.email,
                    Bounce.kind == BounceKind.SOFT,
                    Bounce.received_at >= since,
                    # Only bounces tied to a delivery of ours count, as this one is.
                    or_(Bounce.processed, Bounce.id == bounce.id),
                )
            )
            if (count or 0) >= policy.soft_limit:
                suppress(
                    session,
                    email=bounce.email,
                    reason=SuppressionReason.SOFT_BOUNCE,
                    note=f"{count} soft bounces in {policy.soft_window_days} days; {note}"[:500],
                )
        else:
            return False
    except InvalidAddress:
        return False
    return True


def counts_by_kind(session: Session, send_id: int) -> dict[str, int]:
    """Bounces per kind for one send (by its id), for the send page."""
    rows = session.execute(
        select(Bounce.kind, func.count())
        .join(Delivery, Delivery.id == Bounce.delivery_id)
        .where(Delivery.send_id == send_id)
        .group_by(Bounce.kind)
    ).all()
    return {kind: count for kind, count in rows}

"""Running a send: snapshot recipients, deliver batches, finish.

Progress is recorded when a message is accepted by the relay, never when it
is fetched, so a crash can cause at most the in-flight message to be sent
twice, and never skips anyone. A batch claims its rows for a lease; a batch
run again (Celery redelivery, the sweeper) takes only what is still pending
and unclaimed.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session, object_session

from ..archive import archive_path
from ..language_versions import version_column
from ..mail.branding import Branding
from ..mail.mime import (
    AttachmentData,
    Envelope,
    PreparedMessage,
    build_message,
    new_message_id,
    prepare_message,
)
from ..mail.personalise import RecipientFields
from ..mail.relays import RelayLimited
from ..mail.render import AttachmentInfo, RenderedCircular, RenderError, render_circular
from ..mail.transport import ConnectionFailed
from ..models import (
    Attachment,
    Circular,
    Delivery,
    DeliveryStatus,
    Send,
    SendStatus,
    SendVersion,
    Subscriber,
    utcnow,
)
from .attempt import NO_SUBSCRIBER, Outcome, attempt
from .context import SendContext
from .control import SendWatch, record_final_counts
from .marks import marks_for
from .service import recipients_query

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # temporary failures, left pending for a later try
    error: str | None = None  # why the batch stopped early, if it did
    skipped: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # the send's status when it stopped being running mid-batch
    # Held back by our own relay limits (not a failure): try again in this many seconds.
    held_for: float | None = None

    @property
    def retry(self) -> bool:
        # A paused send is resumed by re-batching what is pending, not by retries.
        return self.deferred > 0 and self.stopped is None


def render_send(
    circular: Circular,
    ctx: SendContext,
    number: int | None = None,
    language: str | None = None,
    branding: Branding | None = None,
) -> RenderedCircular:
    """Render one language version as sent (the default one when `language` is None or
    not one of its versions); `number` stands in for a draft's future number in previews.

    The "view in browser" link points at the version's public archive page, so a
    circular kept out of the archive (or without a number yet: a test send) has none.
    """
    version = circular.version(language) or circular.versions()[0]
    shown_number = circular.number if circular.number is not None else number
    web_url = None
    if shown_number is not None and circular.in_archive is not False:
        web_url = ctx.base_url.rstrip("/") + archive_path(
            shown_number, circular.title, None if version.is_default else version.language
        )
    return render_circular(
        number=shown_number,
        title=version.title,
        body_markdown=version.body_markdown,
        attachments=[
            AttachmentInfo(a.filename, a.size) for a in circular.attachments_for(version.language)
        ],
        # Read at each render: a change saved on the branding page applies from the next send.
        branding=branding or ctx.current_branding(object_session(circular)),
        # The date the organisation's readers see is the date where the organisation is.
        sent_on=(circular.first_sent_at or utcnow()).astimezone(ZoneInfo(ctx.timezone)).date(),
        language=version.language,
        base_url=ctx.base_url,
        web_url=web_url,
    )


def _render_versions(send: Send, ctx: SendContext) -> None:
    """Every language version once: the default on the Send row, the others beside it.

    All with one reading of the branding, whose name is kept for the From header.
    """
    circular = send.circular
    branding = ctx.current_branding(object_session(send))
    send.from_name = branding.name
    for version in circular.versions():
        try:
            rendered = render_send(circular, ctx, language=version.language, branding=branding)
        except RenderError as exc:
            raise RenderError(f"{exc} ({version.language} version)") from exc
        if version.is_default:
            send.subject, send.html_template, send.text_template = (
                rendered.subject,
                rendered.html,
                rendered.text,
            )
        else:
            send.versions.append(
                SendVersion(
                    language=version.language,
                    subject=rendered.subject,
                    html_template=rendered.html,
                    text_template=rendered.text,
                )
            )


def start_send(session: Session, send_id: int, ctx: SendContext) -> list[tuple[int, int]]:
    """Render once, snapshot the recipients, and return the batch ranges to deliver.

    Safe to run again: only the first run snapshots; later runs return the
    ranges still pending.
    """
    claimed = session.execute(
        update(Send)
        .where(Send.id == send_id, Send.status == SendStatus.QUEUED)
        .values(status=SendStatus.RUNNING, started_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    send = session.get(Send, send_id, populate_existing=True)
    if send is None:
        session.rollback()
        return []
    if claimed:
        try:
            _render_versions(send, ctx)
        except RenderError as exc:
            send.versions.clear()
            send.status = SendStatus.FAILED
            send.error = str(exc)
            send.finished_at = utcnow()
            session.commit()
            return []
        list_ids = [item.id for item in send.lists]
        circular = send.circular
        # Each recipient's version is chosen here, in the one INSERT ... SELECT.
        language = version_column(
            Subscriber.language, circular.languages, circular.default_language
        )
        snapshot = (
            recipients_query(send.circular_id, list_ids)
            .group_by(Subscriber.language)
            .order_by(Subscriber.id)
        )
        session.execute(
            insert(Delivery).from_select(
                [
                    "subscriber_id",
                    "list_id",
                    "email",
                    "name",
                    "send_id",
                    "status",
                    "attempts",
                    "language",
                ],
                snapshot.add_columns(
                    literal(send.id),
                    literal(DeliveryStatus.PENDING.value),
                    literal(0),
                    language,
                ),
            )
        )
        send.total = session.scalar(select(func.count()).where(Delivery.send_id == send.id))
        session.commit()
        log.info("send %s: %s recipients", send.id, send.total)
    else:
        session.commit()
    if send.status != SendStatus.RUNNING:
        return []
    ranges = list(pending_ranges(session, send.id, ctx.batch_size))
    if not ranges:
        finish_if_complete(session, send.id)
    return ranges


def pending_ranges(session: Session, send_id: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive id ranges of at most `size` pending deliveries, streamed, not loaded."""
    first = last = None
    count = 0
    result = session.execute(
        select(Delivery.id)
        .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING)
        .order_by(Delivery.id)
        .execution_options(yield_per=5000)
    )
    for (delivery_id,) in result:
        if first is None:
            first = delivery_id
        last = delivery_id
        count += 1
        if count == size:
            yield first, last
            first, count = None, 0
    if first is not None and last is not None:
        yield first, last
    session.commit()


# Keyed by id, start time and language: SQLite may hand a deleted send's id to a new one.
_prepared: OrderedDict[tuple[int, object, str | None], PreparedMessage] = OrderedDict()


def prepared_message(
    session: Session, send: Send, ctx: SendContext, language: str | None = None
) -> PreparedMessage:
    """Encode the shared parts once per send and language in this process (attachments too).

    `language` is a delivery's version; None (deliveries from before versions
    existed) and the default language take the rendering on the Send row.
    """
    key = (send.id, send.started_at, language)
    cached = _prepared.get(key)
    if cached is not None:
        _prepared.move_to_end(key)
        return cached
    circular = send.circular
    subject, html_template, text_template = send.subject, send.html_template, send.text_template
    attachments: list[Attachment] = circular.attachments
    if language is not None:
        attachments = circular.attachments_for(language)
        version = session.get(SendVersion, (send.id, language))
        if version is not None:
            subject, html_template, text_template = (
                version.subject,
                version.html_template,
                version.text_template,
            )
    assert subject is not None and html_template is not None and text_template is not None
    prepared = prepare_message(
        # A send started before sends kept the name (migration 0015) takes today's.
        from_name=send.from_name or ctx.current_branding(session).name,
        from_address=ctx.mail_from,
        subject=subject,
        html_template=html_template,
        text_template=text_template,
        attachments=[
            AttachmentData(a.filename, a.content_type, ctx.files.read(a.sha256))
            for a in attachments
        ],
        list_names={item.id: (item.slug, item.name) for item in send.lists},
        domain=ctx.domain,
    )
    _prepared[key] = prepared
    # Room for a few sends in every version a circular may have.
    while len(_prepared) > 32:
        _prepared.popitem(last=False)
    return prepared


def envelope_for(
    ctx: SendContext,
    prepared: PreparedMessage,
    *,
    message_id: str,
    subscriber_id: int,
    list_id: int | None,
    list_name: str,
    name: str,
    email: str,
    language: str = "en",
) -> Envelope:
    unsubscribe_url = ctx.links.unsubscribe(subscriber_id, list_id)
    fields = RecipientFields(
        name=name,
        email=email,
        list_name=list_name,
        unsubscribe_url=unsubscribe_url,
        preferences_url=ctx.links.preferences(subscriber_id),
        language=language,
    )
    return Envelope(
        to_name=name,
        to_address=email,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=None,
        message_id=message_id,
        fields=fields.values(),
    )


def send_test(
    session: Session,
    circular_id: int,
    address: str,
    ctx: SendContext,
    language: str | None = None,
) -> None:
    """Send the circular as it stands to one address, marked as a test; raises DeliveryError.

    `language` picks the version (default: the circular's default language).
    Its links are those of a subscriber that does not exist (id 0), so following
    them shows a page that explains this was a test and changes nothing.
    """
    circular = session.get(Circular, circular_id)
    if circular is None:
        raise RenderError("This circular does not exist.")
    version = circular.version(language) or circular.versions()[0]
    rendered = render_send(circular, ctx, language=version.language)
    attachments = circular.attachments_for(version.language)
    from_name = ctx.current_branding(session).name
    session.commit()
    prepared = prepare_message(
        from_name=from_name,
        from_address=ctx.mail_from,
        subject=f"[Test] {rendered.subject}",
        html_template=rendered.html,
        text_template=rendered.text,
        attachments=[
            AttachmentData(a.filename, a.content_type, ctx.files.read(a.sha256))
            for a in attachments
        ],
        list_names={0: ("test", "Test sends")},
        domain=ctx.domain,
    )
    envelope = envelope_for(
        ctx,
        prepared,
        message_id=new_message_id(ctx.domain, "test", circular_id),
        subscriber_id=0,
        list_id=0,
        list_name="a test send (no list)",
        name="",
        email=address,
        language=version.language,
    )
    connection = ctx.messenger.connect()
    try:
        connection.send(ctx.mail_from, address, build_message(prepared, envelope))
    finally:
        connection.close()


def deliver_batch(
    session: Session, send_id: int, first_id: int, last_id: int, ctx: SendContext
) -> BatchOutcome:
    outcome = BatchOutcome()
    send = session.get(Send, send_id)
    if send is None or send.status != SendStatus.RUNNING:
        session.rollback()
        outcome.skipped["send-not-running"] = 1
        return outcome
    default_language = send.circular.default_language
    # One prepared message per language version met in this batch, looked up per row.
    by_language: dict[str | None, PreparedMessage] = {}

    def prepared_for(language: str | None) -> PreparedMessage:
        found = by_language.get(language)
        if found is None:
            found = by_language[language] = prepared_message(session, send, ctx, language)
        return found

    list_names = {item.id: item.name for item in send.lists}
    now = utcnow()
    rows = list(
        session.execute(
            update(Delivery)
            .where(
                Delivery.send_id == send_id,
                Delivery.id.between(first_id, last_id),
                Delivery.status == DeliveryStatus.PENDING,
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            .values(claimed_until=now + ctx.claim_lease)
            .returning(
                Delivery.id,
                Delivery.subscriber_id,
                Delivery.list_id,
                Delivery.email,
                Delivery.name,
                Delivery.attempts,
                Delivery.language,
            )
        )
    )
    session.commit()
    rows.sort(key=lambda row: row.id)
    if not rows:
        outcome.skipped["nothing-pending"] = 1
        finish_if_complete(session, send_id)
        return outcome

    def release(remaining: list[Any], error: str) -> None:
        ids = [row.id for row in remaining]
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(claimed_until=None, last_error=error)
        )
        session.commit()
        outcome.deferred += len(ids)

    def hold(remaining: list[Any], limited: RelayLimited) -> None:
        """Keep the rows claimed until the batch's next try, so the sweeper leaves them be."""
        ids = [row.id for row in remaining]
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                claimed_until=utcnow() + timedelta(seconds=limited.retry_after),
                last_error=limited.reply,
            )
        )
        session.commit()
        outcome.deferred += len(ids)
        outcome.held_for = limited.retry_after

    # Between messages: has the send been paused or cancelled, by a person or by relay errors?
    watch = SendWatch(
        session, send_id, pause_after=ctx.pause_after_relay_errors, relay_errors=send.relay_errors
    )
    try:
        connection = ctx.messenger.connect()
    except ConnectionFailed as exc:
        outcome.error = exc.reply
        if isinstance(exc, RelayLimited):
            hold(rows, exc)
        elif watch.relay_error(exc.reply):
            outcome.stopped = watch.stop(rows)
        else:
            release(rows, exc.reply)
        return outcome

    # Each outcome is recorded as the relay answers; the record is confirmed
    # (committed) before the next message goes out, so a crash leaves at most
    # the message in flight unrecorded (see marks.py).
    marks = marks_for(session)
    # A batch slower than its lease (a tight per-second limit, a slow relay) renews its
    # claim on what it has not reached, or the sweeper would hand those rows to another
    # batch and they would go out twice.
    lease = ctx.claim_lease.total_seconds()
    renew_at = time.monotonic() + lease / 3
    try:
        for index, row in enumerate(rows):
            if not watch.running():
                marks.confirm()
                outcome.stopped = watch.stop(rows[index:])
                break
            if time.monotonic() >= renew_at:
                renew_claims(session, [later.id for later in rows[index:]], ctx.claim_lease)
                renew_at = time.monotonic() + lease / 3
            if row.subscriber_id is None:
                marks.record(
                    row.id,
                    status=DeliveryStatus.FAILED,
                    last_error=NO_SUBSCRIBER,
                    claimed_until=None,
                )
                outcome.failed += 1
                continue
            prepared = prepared_for(row.language)
            message = build_message(
                prepared,
                envelope_for(
                    ctx,
                    prepared,
                    message_id=new_message_id(prepared.domain, send_id, row.id),
                    subscriber_id=row.subscriber_id,
                    list_id=row.list_id,
                    list_name=list_names.get(row.list_id, ""),
                    name=row.name,
                    email=row.email,
                    language=row.language or default_language,
                ),
            )
            try:
                result, refusal = attempt(
                    connection,
                    marks,
                    row_id=row.id,
                    attempts=row.attempts,
                    max_attempts=ctx.max_attempts,
                    return_path=ctx.bounce_address(row.id),
                    recipient=row.email,
                    message=message,
                )
            except ConnectionFailed as exc:
                # Reconnecting failed: nothing more goes through this batch now.
                outcome.error = exc.reply
                if isinstance(exc, RelayLimited):
                    hold(rows[index:], exc)
                elif watch.relay_error(exc.reply):
                    outcome.stopped = watch.stop(rows[index:])
                else:
                    release(rows[index:], exc.reply)
                break
            if result is Outcome.SENT:
                outcome.sent += 1
                watch.success()
                continue
            if result is Outcome.FAILED:
                outcome.failed += 1
            else:
                outcome.deferred += 1
            if refusal is not None and not refusal.permanent and watch.relay_error(refusal.reply):
                marks.confirm()
                outcome.stopped = watch.stop(rows[index + 1 :])
                break
    finally:
        try:
            marks.close()
        finally:
            connection.close()
    finish_if_complete(session, send_id)
    return outcome


def renew_claims(session: Session, ids: list[int], lease: timedelta) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.PENDING)
        .values(claimed_until=utcnow() + lease)
    )
    session.commit()


def fail_pending(session: Session, send_id: int, first_id: int, last_id: int, reason: str) -> int:
    """Give up on a range after its retries ran out, so the send can end and say why."""
    count = session.execute(
        update(Delivery)
        .where(
            Delivery.send_id == send_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, last_error=reason, claimed_until=None)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    finish_if_complete(session, send_id)
    return int(count)


def finish_if_complete(session: Session, send_id: int) -> bool:
    """Mark the send done once nothing is pending; true if this call did it."""

    def counted(status: DeliveryStatus) -> Any:
        return (
            select(func.count())
            .where(Delivery.send_id == send_id, Delivery.status == status)
            .scalar_subquery()
        )

    pending = exists().where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING)
    done = session.execute(
        update(Send)
        .where(and_(Send.id == send_id, Send.status == SendStatus.RUNNING, ~pending))
        .values(
            status=SendStatus.DONE,
            finished_at=utcnow(),
            sent_count=counted(DeliveryStatus.SENT),
            failed_count=counted(DeliveryStatus.FAILED),
        )
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    if not done and session.scalar(select(Send.status).where(Send.id == send_id)) == (
        SendStatus.CANCELLED
    ):
        # Cancelled while this batch had a message with the relay: the cancel counted
        # before that message was marked sent, so count again now that it is.
        record_final_counts(session, send_id)
    session.commit()
    return bool(done)


def stalled_sends(session: Session, older_than: timedelta) -> list[int]:
    """Running sends with rows still pending and no batch at work on them: lost batch tasks.

    A batch at work holds its rows for the lease. While any row of a send is held, the
    send is moving and its queued batches take the rest; restarting it then would only
    queue batches that find nothing to do (on a 5,000-recipient send, sweeping every few
    seconds queued hundreds). Once nothing is held, no task is left to take what is pending.
    """
    now = utcnow()
    pending = exists().where(Delivery.send_id == Send.id, Delivery.status == DeliveryStatus.PENDING)
    held = exists().where(
        Delivery.send_id == Send.id,
        Delivery.status == DeliveryStatus.PENDING,
        Delivery.claimed_until >= now,
    )
    ids = list(
        session.scalars(
            select(Send.id).where(
                Send.status == SendStatus.RUNNING,
                Send.started_at < now - older_than,
                pending,
                ~held,
            )
        )
    )
    session.commit()
    return ids

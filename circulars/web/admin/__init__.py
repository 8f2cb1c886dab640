"""The secretariat's admin: circulars, sends, lists and subscribers, and the Outbox."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from ...extensions import db
from ...language_versions import recipients_by_version
from ...mail.outbox import Outbox
from ...mail.personalise import RecipientFields, fill
from ...mail.render import RenderError
from ...models import (
    Attachment,
    Circular,
    Delivery,
    DeliveryStatus,
    MailingList,
    Send,
    SendStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ...sending.context import SendContext
from ...sending.control import ControlRefused, parse_send_time
from ...sending.engine import render_send
from ...sending.numbering import peek_next_number
from ...sending.service import SendRefused, count_recipients, create_send, send_progress
from ...storage import EmptyUpload, UploadTooLarge
from ...subscribers.addresses import InvalidAddress
from ...subscribers.service import SubscriptionRefused, add_to_list, remove_from_list
from ...tasks import SEND_TEST, START_SEND, enqueue
from ..forms import (
    AttachmentForm,
    CircularForm,
    ConfirmForm,
    ImportForm,
    ListForm,
    SendForm,
    SubscriberForm,
    TestSendForm,
)
from ..helpers import files, paginate, sender_required, settings

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
def _require_login() -> None:
    """Every admin page needs a signed-in user (login_required does the redirect)."""


def _send_context() -> SendContext:
    return current_app.extensions["circulars.send_context"]  # type: ignore[no-any-return]


def _circular_or_404(circular_id: int) -> Circular:
    circular = db.session.get(Circular, circular_id)
    if circular is None:
        abort(404)
    return circular


def _list_choices() -> list[tuple[int, str]]:
    return [
        (item.id, item.name)
        for item in db.session.scalars(select(MailingList).order_by(MailingList.name))
    ]


@bp.get("/")
def index() -> Any:
    return redirect(url_for("admin.circulars"))


# --- circulars --------------------------------------------------------------------------


@bp.get("/circulars")
def circulars() -> Any:
    q = request.args.get("q", "").strip()
    query = select(Circular).order_by(
        Circular.number.is_(None).desc(), Circular.number.desc(), Circular.id.desc()
    )
    if q:
        pattern = f"%{q}%"
        query = query.where(
            or_(Circular.title.ilike(pattern), Circular.body_markdown.ilike(pattern))
        )
    page = paginate(query)
    return render_template("admin/circulars/index.html", page=page, q=q)


@bp.route("/circulars/new", methods=["GET", "POST"])
def new_circular() -> Any:
    form = CircularForm()
    form.lists.choices = _list_choices()
    if form.validate_on_submit():
        circular = Circular(
            title=(form.title.data or "").strip(),
            body_markdown=form.body.data or "",
            topic=(form.topic.data or "").strip() or None,
            in_archive=bool(form.in_archive.data),
            created_by_id=current_user.id,
        )
        circular.lists = list(
            db.session.scalars(select(MailingList).where(MailingList.id.in_(form.lists.data or [])))
        )
        db.session.add(circular)
        db.session.commit()
        flash("Draft saved. You can now add attachments, preview it and send a test.", "success")
        return redirect(url_for("admin.edit_circular", circular_id=circular.id))
    return render_template(
        "admin/circulars/edit.html", form=form, circular=None
    ), 200 if not form.errors else 400


@bp.route("/circulars/<int:circular_id>", methods=["GET", "POST"])
def edit_circular(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    if not circular.is_draft:
        sends = db.session.scalars(
            select(Send).where(Send.circular_id == circular.id).order_by(Send.id.desc())
        ).all()
        return render_template(
            "admin/circulars/show.html", circular=circular, sends=sends, form=ConfirmForm()
        )
    form = CircularForm(obj=None if request.method == "POST" else circular)
    form.lists.choices = _list_choices()
    if request.method == "GET":
        form.body.data = circular.body_markdown
        form.lists.data = [item.id for item in circular.lists]
        form.revision.data = str(circular.revision)
    status = 200
    if form.validate_on_submit():
        if form.revision.data != str(circular.revision):
            # Someone saved in between: keep their version and show this one's text for copying.
            form.title.errors.append(
                "Someone else saved this draft after you opened it. Nothing was overwritten: "
                "reload the page to see their version, and copy your changes from below."
            )
            status = 409
        else:
            circular.title = (form.title.data or "").strip()
            circular.body_markdown = form.body.data or ""
            circular.topic = (form.topic.data or "").strip() or None
            circular.in_archive = bool(form.in_archive.data)
            circular.lists = list(
                db.session.scalars(
                    select(MailingList).where(MailingList.id.in_(form.lists.data or []))
                )
            )
            circular.revision += 1
            circular.updated_at = utcnow()
            db.session.commit()
            flash("Draft saved.", "success")
            return redirect(url_for("admin.edit_circular", circular_id=circular.id))
    elif form.errors:
        status = 400
    return (
        render_template(
            "admin/circulars/edit.html",
            form=form,
            circular=circular,
            attachment_form=AttachmentForm(),
            test_form=TestSendForm(address=current_user.email),
            confirm_form=ConfirmForm(),
            scheduled_sends=db.session.scalars(
                select(Send)
                .where(Send.circular_id == circular.id, Send.status == SendStatus.SCHEDULED)
                .order_by(Send.scheduled_at)
            ).all(),
        ),
        status,
    )


@bp.post("/circulars/<int:circular_id>/attachments")
def add_attachment(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    if not circular.is_draft:
        abort(409)
    form = AttachmentForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            stored = files().save(upload.stream, upload.filename or "attachment", upload.mimetype)
        except (UploadTooLarge, EmptyUpload) as exc:
            flash(f"Not attached: {exc}", "error")
        else:
            db.session.add(
                Attachment(
                    circular_id=circular.id,
                    filename=stored.filename,
                    content_type=stored.content_type,
                    size=stored.size,
                    sha256=stored.sha256,
                )
            )
            circular.revision += 1
            db.session.commit()
            flash(f"Attached {stored.filename}.", "success")
    else:
        for errors in form.errors.values():
            for error in errors:
                flash(f"Not attached: {error}", "error")
    return redirect(url_for("admin.edit_circular", circular_id=circular.id) + "#attachments")


@bp.post("/circulars/<int:circular_id>/attachments/<int:attachment_id>/delete")
def delete_attachment(circular_id: int, attachment_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None or attachment.circular_id != circular.id:
        abort(404)
    if not circular.is_draft:
        abort(409)
    if ConfirmForm().validate_on_submit():
        db.session.delete(attachment)
        circular.revision += 1
        db.session.commit()
        flash(f"Removed {attachment.filename}.", "success")
    return redirect(url_for("admin.edit_circular", circular_id=circular.id) + "#attachments")


@bp.get("/attachments/<int:attachment_id>")
def download_attachment(attachment_id: int) -> Any:
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None:
        abort(404)
    return send_file(
        files().path_for(attachment.sha256),
        mimetype=attachment.content_type,
        as_attachment=True,
        download_name=attachment.filename,
    )


def _preview(circular: Circular, language: str | None = None) -> tuple[str, str, str]:
    """One version as a recipient will see it, with the signed-in user as the sample."""
    version = circular.version(language) or circular.versions()[0]
    rendered = render_send(
        circular, _send_context(), number=peek_next_number(db.session), language=version.language
    )
    first_list = circular.lists[0].name if circular.lists else "your list"
    fields = RecipientFields(
        name="Ana Sample",
        email=current_user.email,
        list_name=first_list,
        unsubscribe_url="#unsubscribe",
        preferences_url="#preferences",
        language=version.language,
    ).values()
    return (
        rendered.subject,
        fill(rendered.html, fields, escape=True),
        fill(rendered.text, fields, escape=False),
    )


@bp.get("/circulars/<int:circular_id>/preview")
def preview(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    language = request.args.get("lang")
    if language is not None and circular.version(language) is None:
        abort(404)
    try:
        subject, html, text = _preview(circular, language)
    except RenderError as exc:
        flash(f"Cannot preview: {exc}", "error")
        return redirect(url_for("admin.edit_circular", circular_id=circular_id))
    size = len(html.encode("utf-8"))
    return render_template(
        "admin/circulars/preview.html",
        circular=circular,
        subject=subject,
        text=text,
        html_size=size,
        test_form=TestSendForm(address=current_user.email),
        version=circular.version(language) or circular.versions()[0],
    )


@bp.get("/circulars/<int:circular_id>/preview/email.html")
def preview_email(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    _subject, html, _text = _preview(circular, request.args.get("lang"))
    response = Response(html, mimetype="text/html")
    # The email is shown as-is inside the preview frame; it may not run scripts or submit forms.
    response.headers["Content-Security-Policy"] = "sandbox allow-popups; frame-ancestors 'self'"
    return response


@bp.post("/circulars/<int:circular_id>/test")
def test_send(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    form = TestSendForm()
    language = form.language.data or None
    if form.validate_on_submit() and language is not None and circular.version(language) is None:
        flash(f"Test not sent: this circular has no version in {language!r}.", "error")
    elif form.validate_on_submit():
        try:
            render_send(circular, _send_context(), language=language)
        except RenderError as exc:
            flash(f"Not sent: {exc}", "error")
        else:
            enqueue(SEND_TEST, circular.id, form.address.data, language)
            flash(f"A test is on its way to {form.address.data}.", "success")
        db.session.rollback()
    else:
        for error in form.address.errors:
            flash(f"Test not sent: {error}", "error")
    return redirect(request.referrer or url_for("admin.edit_circular", circular_id=circular_id))


@bp.route("/circulars/<int:circular_id>/send", methods=["GET", "POST"])
@sender_required
def send(circular_id: int) -> Any:
    circular = _circular_or_404(circular_id)
    form = SendForm()
    form.lists.choices = _list_choices()
    if request.method == "GET":
        chosen = request.args.getlist("lists", type=int) or [item.id for item in circular.lists]
        form.lists.data = [list_id for list_id in chosen if list_id in dict(form.lists.choices)]
    count = count_recipients(db.session, circular.id, form.lists.data or [])
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        scheduled_at = None
        if "schedule" in request.form:
            # The "Schedule" button: the time is read in the organisation's time zone.
            try:
                scheduled_at = parse_send_time(form.scheduled_at.data or "", settings().timezone)
            except ControlRefused as exc:
                form.scheduled_at.errors = [str(exc)]
        if form.scheduled_at.errors:
            status = 400
        else:
            try:
                new_send = create_send(
                    db.session,
                    circular.id,
                    form.lists.data or [],
                    current_user.id,
                    scheduled_at=scheduled_at,
                )
            except SendRefused as exc:
                db.session.rollback()
                flash(str(exc), "error")
            else:
                db.session.commit()
                if scheduled_at is None:
                    enqueue(START_SEND, new_send.id)
                    flash(f"Sending {new_send.circular.display_title}.", "success")
                else:
                    flash(f"Scheduled {new_send.circular.display_title}.", "success")
                return redirect(url_for("admin.show_send", send_id=new_send.id))
    next_number = circular.number or peek_next_number(db.session)
    return render_template(
        "admin/circulars/send.html",
        circular=circular,
        form=form,
        count=count,
        next_number=next_number,
        by_version=recipients_by_version(db.session, circular, form.lists.data or [])
        if len(circular.languages) > 1
        else {},
    ), status


# --- sends ------------------------------------------------------------------------------


def _progress(send_row: Send) -> dict[str, Any]:
    counts = send_progress(db.session, send_row.id)
    total = send_row.total or 0
    finished = counts["sent"] + counts["failed"]
    return {
        "id": send_row.id,
        "status": send_row.status,
        "total": total,
        "sent": counts["sent"],
        "failed": counts["failed"],
        "pending": counts["pending"],
        "percent": 100
        if send_row.status == SendStatus.DONE
        else (int(finished * 100 / total) if total else 0),
        "error": send_row.error,
        "cancelled": counts["cancelled"],
        "pause_reason": send_row.pause_reason,
        "scheduled_at": send_row.scheduled_at.isoformat() if send_row.scheduled_at else None,
    }


@bp.get("/sends")
def sends() -> Any:
    page = paginate(select(Send).options(selectinload(Send.circular)).order_by(Send.id.desc()))
    return render_template("admin/sends/index.html", page=page)


@bp.get("/sends/<int:send_id>")
def show_send(send_id: int) -> Any:
    send_row = db.session.get(Send, send_id)
    if send_row is None:
        abort(404)
    failures = db.session.scalars(
        select(Delivery)
        .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
        .limit(100)
    ).all()
    return render_template(
        "admin/sends/show.html", send=send_row, progress=_progress(send_row), failures=failures
    )


@bp.get("/sends/<int:send_id>/progress.json")
def send_progress_json(send_id: int) -> Any:
    send_row = db.session.get(Send, send_id)
    if send_row is None:
        abort(404)
    return jsonify(_progress(send_row))


# --- lists and subscribers --------------------------------------------------------------


@bp.get("/lists")
def lists() -> Any:
    counts = (
        select(Subscription.list_id, func.count().label("n"))
        .where(Subscription.status == SubscriptionStatus.CONFIRMED)
        .group_by(Subscription.list_id)
        .subquery()
    )
    rows = db.session.execute(
        select(MailingList, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.list_id == MailingList.id)
        .order_by(MailingList.name)
    ).all()
    return render_template("admin/lists/index.html", rows=rows)


@bp.route("/lists/new", methods=["GET", "POST"])
@sender_required
def new_list() -> Any:
    form = ListForm()
    if form.validate_on_submit():
        slug = form.slug.data or ""
        if db.session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
            form.slug.errors.append("A list with this short name exists already.")
        else:
            db.session.add(
                MailingList(
                    slug=slug,
                    name=(form.name.data or "").strip(),
                    description=form.description.data or "",
                    public=bool(form.public.data),
                )
            )
            db.session.commit()
            flash(f"List {form.name.data} created.", "success")
            return redirect(url_for("admin.show_list", slug=slug))
    return render_template("admin/lists/new.html", form=form), 200 if not form.errors else 400


def _list_or_404(slug: str) -> MailingList:
    found = db.session.scalar(select(MailingList).where(MailingList.slug == slug))
    if found is None:
        abort(404)
    return found


@bp.get("/lists/<slug>")
def show_list(slug: str) -> Any:
    mailing_list = _list_or_404(slug)
    return _render_list(mailing_list, SubscriberForm(), ImportForm())


def _render_list(
    mailing_list: MailingList,
    form: SubscriberForm,
    import_form: ImportForm,
    status: int = 200,
    report: Any = None,
) -> Any:
    q = request.args.get("q", "").strip()
    query = (
        select(Subscriber, Subscription)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == mailing_list.id)
        .order_by(Subscriber.email)
    )
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(
            or_(
                Subscriber.email.like(pattern),
                func.lower(Subscriber.name).like(pattern),
                func.lower(Subscriber.organization).like(pattern),
            )
        )
    page = paginate(query, per_page=50, scalars=False)
    return (
        render_template(
            "admin/lists/show.html",
            mailing_list=mailing_list,
            page=page,
            q=q,
            form=form,
            import_form=import_form,
            confirm_form=ConfirmForm(),
            report=report,
        ),
        status,
    )


@bp.post("/lists/<slug>/subscribers")
@sender_required
def add_subscriber(slug: str) -> Any:
    mailing_list = _list_or_404(slug)
    form = SubscriberForm()
    if form.validate_on_submit():
        try:
            subscriber, _created = add_to_list(
                db.session,
                mailing_list,
                form.email.data or "",
                name=form.name.data or "",
                organization=form.organization.data or "",
                language=form.language.data or "en",
                override_reason=form.override_reason.data or None,
                user_id=current_user.id,
            )
        except InvalidAddress as exc:
            db.session.rollback()
            form.email.errors.append(f"Not a valid address: {exc}")
        except SubscriptionRefused as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
            # A second step: the form comes back with a reason field to add anyway.
            form.offer_override = exc.overridable  # type: ignore[attr-defined]
        else:
            db.session.commit()
            flash(f"Added {subscriber.email} to {mailing_list.name}.", "success")
            return redirect(url_for("admin.show_list", slug=slug))
    return _render_list(mailing_list, form, ImportForm(), status=400)


@bp.post("/lists/<slug>/subscribers/<int:subscriber_id>/remove")
@sender_required
def remove_subscriber(slug: str, subscriber_id: int) -> Any:
    mailing_list = _list_or_404(slug)
    if ConfirmForm().validate_on_submit():
        subscriber = db.session.get(Subscriber, subscriber_id)
        if subscriber is not None and remove_from_list(db.session, subscriber_id, mailing_list.id):
            db.session.commit()
            flash(f"Removed {subscriber.email} from {mailing_list.name}.", "success")
        else:
            flash("That subscriber is not on this list.", "error")
    return redirect(url_for("admin.show_list", slug=slug, page=request.args.get("page", 1)))


# --- outbox (embedded default) ----------------------------------------------------------


def _outbox() -> Outbox:
    if not settings().capture_mail:
        abort(404)
    return Outbox(settings().outbox_path)


@bp.get("/outbox")
def outbox() -> Any:
    box = _outbox()
    page_number = max(1, request.args.get("page", 1, type=int) or 1)
    per_page = 50
    items, total = box.summaries((page_number - 1) * per_page, per_page)
    pages = max(1, -(-total // per_page))
    return render_template(
        "admin/outbox/index.html",
        items=items,
        total=total,
        page=page_number,
        pages=pages,
        form=ConfirmForm(),
    )


@bp.get("/outbox/<key>")
def outbox_message(key: str) -> Any:
    message = _outbox().message(key)
    if message is None:
        abort(404)
    text_part = message.get_body(preferencelist=("plain",))
    attachments = [
        (part.get_filename() or "attachment", len(part.get_payload(decode=True) or b""))
        for part in message.iter_attachments()
    ]
    return render_template(
        "admin/outbox/show.html",
        key=key,
        message=message,
        text=text_part.get_content() if text_part is not None else "",
        has_html=message.get_body(preferencelist=("html",)) is not None,
        attachments=attachments,
    )


@bp.get("/outbox/<key>/body.html")
def outbox_html(key: str) -> Any:
    message = _outbox().message(key)
    part = message.get_body(preferencelist=("html",)) if message is not None else None
    if part is None:
        abort(404)
    response = Response(part.get_content(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = "sandbox allow-popups; frame-ancestors 'self'"
    return response


@bp.get("/outbox/<key>.eml")
def outbox_raw(key: str) -> Any:
    raw = _outbox().raw(key)
    if raw is None:
        abort(404)
    return Response(
        raw,
        mimetype="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{key}.eml"'},
    )


@bp.post("/outbox/clear")
def outbox_clear() -> Any:
    if ConfirmForm().validate_on_submit():
        count = _outbox().clear()
        flash(f"Removed {count} captured messages.", "success")
    return redirect(url_for("admin.outbox"))


# The admin's other pages: imports and exports, subscribers, list settings and the
# subscribe form snippet, DNS records (DKIM, SPF, DMARC), bounces and complaints,
# send control (pause, resume, cancel), send reports, a sent circular's archive settings,
# sign-on statements (endorsements), and the organisation's branding.
from . import (  # noqa: E402,F401
    archive,
    bounces,
    branding,
    digests,
    dns,
    endorsements,
    exports,
    imports,
    list_settings,
    reports,
    send_control,
    subscribers,
    suppressions,
    versions,
)

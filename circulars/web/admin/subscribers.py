"""Admin pages for subscribers at scale: search and filters with keyset pages, a detail
page, and bulk actions on a whole filter result after a confirmation that counts them."""

from __future__ import annotations

from typing import Any

from flask import (
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ...extensions import db
from ...models import (
    ConsentEvent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    User,
    utcnow,
)
from ...sending.reports import subscriber_history
from ...subscribers import search
from ...subscribers.bulk import BulkAction, BulkResult, preview, run
from ...subscribers.search import SubscriberFilter
from ...subscribers.suppression import REASON_LABELS, is_suppressed
from ...tasks import BULK_SUBSCRIBERS, enqueue
from ..forms import ConfirmForm
from ..helpers import sender_required
from . import bp

# Entries of a subscriber's history (deliveries, bounces) per page.
HISTORY_PER_PAGE = 25

# Above this many changes a confirmed bulk action runs in the worker, not in the request.
INLINE_LIMIT = 20_000

ACTION_LABELS = {
    "add": "Add to a list",
    "remove": "Remove from a list",
    "unsubscribe": "Unsubscribe",
    "export": "Export as CSV",
}


def _lists() -> dict[int, MailingList]:
    return {
        item.id: item for item in db.session.scalars(select(MailingList).order_by(MailingList.name))
    }


def _filter_from_request() -> tuple[SubscriberFilter, dict[str, str]]:
    source = request.form if request.method == "POST" else request.args
    return SubscriberFilter.from_args(source)


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() else None


@bp.get("/subscribers")
def subscribers() -> Any:
    query_filter, errors = _filter_from_request()
    lists = _lists()
    if query_filter.list_id is not None and query_filter.list_id not in lists:
        errors["list"] = "That list no longer exists."
        query_filter = search.with_changes(query_filter, list_id=None, list_status="")
    page = search.keyset_page(
        db.session, query_filter, after=_int_arg("after"), before=_int_arg("before")
    )
    estimate = search.estimated_total(db.session) if query_filter.is_empty else None
    return render_template(
        "admin/subscribers/index.html",
        page=page,
        f=query_filter,
        args=query_filter.to_args(),
        errors=errors,
        lists=lists,
        estimate=estimate,
        statuses=list(SubscriberStatus),
        list_statuses=list(SubscriptionStatus),
        actions=ACTION_LABELS,
    )


@bp.get("/subscribers/<int:subscriber_id>")
def subscriber(subscriber_id: int) -> Any:
    person = db.session.get(
        Subscriber,
        subscriber_id,
        options=[selectinload(Subscriber.subscriptions).selectinload(Subscription.mailing_list)],
    )
    if person is None:
        abort(404)
    consent = db.session.execute(
        select(ConsentEvent, User.email, MailingList.name)
        .outerjoin(User, User.id == ConsentEvent.actor_id)
        .outerjoin(MailingList, MailingList.id == ConsentEvent.list_id)
        .where(ConsentEvent.subscriber_id == person.id)
        .order_by(ConsentEvent.id.desc())
        .limit(200)
    ).all()
    history = subscriber_history(
        db.session,
        person.id,
        person.email,
        page=request.args.get("page", 1, type=int) or 1,
        per_page=HISTORY_PER_PAGE,
    )
    return render_template(
        "admin/subscribers/show.html",
        person=person,
        subscriptions=sorted(person.subscriptions, key=lambda s: s.mailing_list.name),
        consent=consent,
        history=history,
        suppression=is_suppressed(db.session, person.email),
        reasons=REASON_LABELS,
    )


def _bulk_request() -> tuple[SubscriberFilter, str, int | None, list[str]]:
    """The filter, the action and its target list from the request, with what is wrong."""
    source = request.form if request.method == "POST" else request.args
    query_filter, errors = SubscriberFilter.from_args(source)
    problems = list(errors.values())
    action = source.get("action", "")
    target = source.get("target", "")
    list_id = int(target) if target.isdigit() else None
    if action not in ACTION_LABELS:
        problems.append("Choose what to do with the subscribers.")
    elif action in ("add", "remove") and list_id is None:
        problems.append(f"Choose the list to {action} them {'to' if action == 'add' else 'from'}.")
    elif action == "unsubscribe" and list_id is None and target != "all":
        problems.append("Choose a list to unsubscribe them from, or all lists.")
    if list_id is not None and db.session.get(MailingList, list_id) is None:
        problems.append("That list no longer exists.")
    return query_filter, action, list_id, problems


@bp.route("/subscribers/bulk", methods=["GET", "POST"])
@sender_required
def subscribers_bulk() -> Any:
    query_filter, action, list_id, problems = _bulk_request()
    back = url_for("admin.subscribers", **query_filter.to_args())
    if problems:
        for problem in problems:
            flash(problem, "error")
        return redirect(back)
    target_list = db.session.get(MailingList, list_id) if list_id is not None else None
    form = ConfirmForm()
    if action == "export":
        matched = search.count(db.session, query_filter)
        return render_template(
            "admin/subscribers/bulk.html",
            action=action,
            label=ACTION_LABELS[action],
            f=query_filter,
            args=query_filter.to_args(),
            target_list=None,
            target="",
            outcome=BulkResult(matched=matched, changed=matched),
            form=form,
            back=back,
        )
    bulk_action = BulkAction(action)
    if request.method == "POST" and form.validate_on_submit():
        expected = request.form.get("expected", "")
        if expected.isdigit() and int(expected) > INLINE_LIMIT:
            # Too many for one request (a proxy or gunicorn would cut it off): a worker
            # runs it, committing chunk by chunk.
            enqueue(BULK_SUBSCRIBERS, query_filter.to_args(), action, list_id, current_user.id)
            flash(
                f"{ACTION_LABELS[action]}: {expected} subscribers, running in the background. "
                "The lists and this page show the result as it goes.",
                "info",
            )
            return redirect(back)
        # Each chunk is committed: a million rows never wait in one transaction.
        result = run(
            db.session,
            query_filter,
            bulk_action,
            list_id,
            user_id=current_user.id,
            on_chunk=lambda _progress: db.session.commit(),
        )
        db.session.commit()
        flash(_summary(bulk_action, target_list, result), "success")
        return redirect(back)
    outcome = preview(db.session, query_filter, bulk_action, list_id)
    return render_template(
        "admin/subscribers/bulk.html",
        action=action,
        label=ACTION_LABELS[action],
        f=query_filter,
        args=query_filter.to_args(),
        target_list=target_list,
        target=str(list_id) if list_id is not None else "all",
        outcome=outcome,
        form=form,
        back=back,
    ), 200 if request.method == "GET" else 400


def _people(n: int) -> str:
    return f"{n} subscriber{'s' if n != 1 else ''}"


def _summary(action: BulkAction, target: MailingList | None, result: BulkResult) -> str:
    where = target.name if target is not None else "every list"
    if action == BulkAction.ADD:
        skipped = [
            f"{result.suppressed} suppressed" if result.suppressed else "",
            f"{result.inactive} unsubscribed or blocked" if result.inactive else "",
            f"{result.already} already on it or who had left it" if result.already else "",
        ]
        rest = ", ".join(part for part in skipped if part)
        return f"Added {_people(result.changed)} to {where}." + (
            f" Skipped: {rest}." if rest else ""
        )
    if action == BulkAction.REMOVE:
        return f"Removed {_people(result.changed)} from {where}."
    return f"Unsubscribed {_people(result.changed)} from {where}."


@bp.get("/subscribers/export.csv")
@sender_required
def subscribers_export() -> Any:
    """The whole filter result as CSV, streamed as it is read (subscribers.export)."""
    try:
        from ...subscribers.export import iter_csv  # helper D's module
    except ImportError:  # pragma: no cover - until the export module is in place
        abort(404)
    query_filter, _errors = SubscriberFilter.from_args(request.args)
    body = stream_with_context(iter_csv(db.session, query_filter.ids()))
    return Response(
        body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="subscribers-{utcnow():%Y-%m-%d}.csv"',
            "Cache-Control": "no-store",
        },
    )

"""Bulk actions on everyone a filter matches: add to a list, remove, unsubscribe.

Set-based and chunked: the matching ids are walked in id order, a few
thousand at a time, and each chunk is one INSERT … SELECT or UPDATE per
table, never a statement per subscriber. `on_chunk` lets the caller commit
after each chunk, so a million rows never sit in one transaction (and SQLite's
single writer lock is released between chunks). Every action is idempotent, so
running it again after an interruption finishes the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from ..models import (
    ConsentAction,
    ConsentEvent,
    DeliveryMode,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
    utcnow,
)
from .search import SubscriberFilter, suppressed_condition
from .suppression import hash_value

CHUNK = 5000
# Writes go through the Core connection, and count what changed by rowcount or RETURNING.


class BulkAction(StrEnum):
    ADD = "add"  # to a list, confirmed (staff vouch), skipping the suppressed
    REMOVE = "remove"  # the subscription row goes; history stays
    UNSUBSCRIBE = "unsubscribe"  # from one list, or from everything (list None)


@dataclass
class BulkResult:
    """What happened (or, from `preview`, what would), by reason."""

    matched: int = 0  # subscribers the filter matched
    changed: int = 0  # added, removed or unsubscribed
    already: int = 0  # already on the list (run: or left it) / not on it / already unsubscribed
    suppressed: int = 0  # add: on the suppression list, skipped
    inactive: int = 0  # add: unsubscribed from everything or blocked, skipped
    left: int = 0  # add, preview only: left this list themselves, not put back
    seconds: float = 0.0


def _id_chunks(session: Session, query_filter: SubscriberFilter, size: int) -> Iterator[list[int]]:
    """The matching ids in ascending order, `size` at a time (keyset, no OFFSET)."""
    last = 0
    while True:
        ids = list(
            session.scalars(
                query_filter.ids().where(Subscriber.id > last).order_by(Subscriber.id).limit(size)
            )
        )
        if not ids:
            return
        yield ids
        last = ids[-1]
        if len(ids) < size:
            return


def _total(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _suppression_joined(query: Select[Any]) -> tuple[Select[Any], ColumnElement[bool]]:
    """The query with the suppressions of each subscriber outer-joined, and the test for
    "suppressed" over them.

    Joins rather than EXISTS inside CASE: each joins at most one row (suppressions
    are unique by kind and value), and the database hash-joins a million rows where
    a per-row subquery cannot.
    """
    by_address = aliased(Suppression)
    by_domain = aliased(Suppression)
    joined = query.outerjoin(
        by_address,
        and_(by_address.kind == SuppressionKind.ADDRESS, by_address.value == Subscriber.email),
    ).outerjoin(
        by_domain,
        and_(by_domain.kind == SuppressionKind.DOMAIN, by_domain.value == Subscriber.domain),
    )
    suppressed = or_(
        by_address.id.is_not(None),
        and_(by_domain.id.is_not(None), ~Subscriber.suppression_exempt),
    )
    return joined, suppressed


def _add_counts(
    session: Session, list_id: int, *where: ColumnElement[bool]
) -> tuple[int, int, int, int, int]:
    """For an add: matched, suppressed, inactive, left, already (two aggregate queries).

    The second starts from the target list's subscriptions, so it costs what the
    list holds and never multiplies the list by the selection (a planner with
    stale statistics on a list that a bulk add just filled would otherwise
    nest-loop over both).
    """
    query, suppressed = _suppression_joined(select(Subscriber.id).select_from(Subscriber))
    active = Subscriber.status == SubscriberStatus.ACTIVE
    matched, n_suppressed, inactive = session.execute(
        query.with_only_columns(
            func.count(), _total(suppressed), _total(and_(~suppressed, ~active))
        ).where(*where)
    ).one()
    on_list, suppressed_there = _suppression_joined(
        select(Subscription.status).select_from(Subscription).join(Subscriber)
    )
    left = already = 0
    for status, n in session.execute(
        on_list.with_only_columns(Subscription.status, func.count())
        .where(Subscription.list_id == list_id, active, ~suppressed_there, *where)
        .group_by(Subscription.status)
    ):
        if status == SubscriptionStatus.UNSUBSCRIBED:
            left += int(n)
        else:
            already += int(n)
    return int(matched), int(n_suppressed or 0), int(inactive or 0), left, already


def _subscription_counts(
    session: Session, list_id: int | None, *where: ColumnElement[bool]
) -> tuple[int, int, int, int]:
    """For remove/unsubscribe: matched, on the list (any status), still subscribed, active."""
    matched, active = session.execute(
        select(func.count(), _total(Subscriber.status == SubscriberStatus.ACTIVE)).where(*where)
    ).one()
    on_list = still = 0
    if list_id is not None:
        for status, n in session.execute(
            select(Subscription.status, func.count())
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscription.list_id == list_id, *where)
            .group_by(Subscription.status)
        ):
            on_list += int(n)
            if status != SubscriptionStatus.UNSUBSCRIBED:
                still += int(n)
    return int(matched), on_list, still, int(active or 0)


def preview(
    session: Session, query_filter: SubscriberFilter, action: BulkAction, list_id: int | None
) -> BulkResult:
    """What `run` would do now, counted in one query over the whole filter result."""
    result = BulkResult()
    if action == BulkAction.ADD:
        assert list_id is not None
        counts = _add_counts(session, list_id, *query_filter.conditions())
        result.matched, result.suppressed, result.inactive, result.left, result.already = counts
        result.changed = (
            result.matched - result.suppressed - result.inactive - result.left - result.already
        )
        return result
    matched, on_list, still, active = _subscription_counts(
        session, list_id, *query_filter.conditions()
    )
    result.matched = matched
    changed = on_list if action == BulkAction.REMOVE else still if list_id else active
    result.changed, result.already = changed, matched - changed
    return result


def run(
    session: Session,
    query_filter: SubscriberFilter,
    action: BulkAction,
    list_id: int | None,
    *,
    user_id: int | None,
    on_chunk: Callable[[BulkResult], None] | None = None,
    chunk_size: int = CHUNK,
) -> BulkResult:
    """Apply the action to every subscriber the filter matches, chunk by chunk.

    Staff actions are recorded as consent events with `actor_id` (added by
    staff, left a list, unsubscribed from everything). Unsubscribing from
    everything also suppresses the addresses, as a person's own does.
    """
    if action in (BulkAction.ADD, BulkAction.REMOVE) and list_id is None:
        raise ValueError(f"{action} needs a list")
    started = time.perf_counter()
    result = BulkResult()
    for ids in _id_chunks(session, query_filter, chunk_size):
        result.matched += len(ids)
        if action == BulkAction.ADD:
            assert list_id is not None
            _add_chunk(session, ids, list_id, user_id, result)
        elif action == BulkAction.REMOVE:
            assert list_id is not None
            removed = (
                session.connection()
                .execute(
                    delete(Subscription).where(
                        Subscription.list_id == list_id, Subscription.subscriber_id.in_(ids)
                    )
                )
                .rowcount
            )
            result.changed += int(removed)
            result.already += len(ids) - int(removed)
        else:
            _unsubscribe_chunk(session, ids, list_id, user_id, result)
        session.flush()
        if on_chunk is not None:
            on_chunk(result)
    result.seconds = time.perf_counter() - started
    return result


def _add_chunk(
    session: Session, ids: list[int], list_id: int, user_id: int | None, result: BulkResult
) -> None:
    query, is_suppressed = _suppression_joined(select(Subscriber.id).select_from(Subscriber))
    active = Subscriber.status == SubscriberStatus.ACTIVE
    suppressed, inactive = session.execute(
        query.with_only_columns(_total(is_suppressed), _total(and_(~is_suppressed, ~active))).where(
            Subscriber.id.in_(ids)
        )
    ).one()
    result.suppressed += int(suppressed or 0)
    result.inactive += int(inactive or 0)
    now = utcnow()
    dialect = session.get_bind().dialect.name
    statement = (
        postgresql.insert(Subscription) if dialect == "postgresql" else sqlite.insert(Subscription)
    )
    # Whoever is on the list already (or left it) is skipped by the unique constraint,
    # not by a NOT EXISTS the planner may misjudge on a list that is growing.
    added = session.connection().execute(
        statement.from_select(
            [
                "subscriber_id",
                "list_id",
                "status",
                "delivery",
                "created_at",
                "updated_at",
                "confirmed_at",
            ],
            select(
                Subscriber.id,
                literal(list_id),
                literal(SubscriptionStatus.CONFIRMED.value),
                literal(DeliveryMode.EVERY.value),
                literal(now, Subscription.created_at.type),
                literal(now, Subscription.updated_at.type),
                literal(now, Subscription.created_at.type),
            ).where(
                Subscriber.id.in_(ids),
                Subscriber.status == SubscriberStatus.ACTIVE,
                ~suppressed_condition(),
            ),
        )
        .on_conflict_do_nothing(index_elements=["subscriber_id", "list_id"])
        .returning(Subscription.subscriber_id)
    )
    added_ids = list(added.scalars())
    if added_ids:
        session.connection().execute(
            insert(ConsentEvent),
            [
                {
                    "subscriber_id": subscriber_id,
                    "list_id": list_id,
                    "action": ConsentAction.ADDED_BY_STAFF.value,
                    "occurred_at": now,
                    "actor_id": user_id,
                    "source": "admin: bulk add",
                }
                for subscriber_id in added_ids
            ],
        )
    result.changed += len(added_ids)
    # The eligible ones not added were on the list already, or had left it (run() does not
    # tell these apart; preview() does).
    result.already += len(ids) - int(suppressed or 0) - int(inactive or 0) - len(added_ids)


def _unsubscribe_chunk(
    session: Session, ids: list[int], list_id: int | None, user_id: int | None, result: BulkResult
) -> None:
    now = utcnow()
    still = and_(
        Subscription.subscriber_id.in_(ids),
        Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
    )
    if list_id is not None:
        still = and_(still, Subscription.list_id == list_id)
    # One consent event per subscription left (list) or per person (everything).
    if list_id is not None:
        session.connection().execute(
            insert(ConsentEvent).from_select(
                ["subscriber_id", "list_id", "action", "occurred_at", "actor_id", "source"],
                select(
                    Subscription.subscriber_id,
                    Subscription.list_id,
                    literal(ConsentAction.LEFT.value),
                    literal(now, ConsentEvent.occurred_at.type),
                    literal(user_id, ConsentEvent.actor_id.type),
                    literal("admin: bulk unsubscribe"),
                ).where(still),
            )
        )
    changed = (
        session.connection()
        .execute(
            update(Subscription)
            .where(still)
            .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        .rowcount
    )
    if list_id is not None:
        # One subscription per person and list, so rows changed are people changed.
        result.changed += int(changed)
        result.already += len(ids) - int(changed)
        return
    active = and_(Subscriber.id.in_(ids), Subscriber.status == SubscriberStatus.ACTIVE)
    emails = list(session.scalars(select(Subscriber.email).where(active)))
    session.connection().execute(
        insert(ConsentEvent).from_select(
            ["subscriber_id", "list_id", "action", "occurred_at", "actor_id", "source"],
            select(
                Subscriber.id,
                null(),
                literal(ConsentAction.UNSUBSCRIBED_ALL.value),
                literal(now, ConsentEvent.occurred_at.type),
                literal(user_id, ConsentEvent.actor_id.type),
                literal("admin: bulk unsubscribe"),
            ).where(active),
        )
    )
    session.connection().execute(
        update(Subscriber)
        .where(active)
        .values(status=SubscriberStatus.UNSUBSCRIBED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    _suppress_many(session, emails, user_id)
    result.changed += len(emails)
    result.already += len(ids) - len(emails)


def _suppress_many(session: Session, emails: list[str], user_id: int | None) -> None:
    """Address suppressions (reason `unsubscribed`) for many addresses in one statement;
    an address already suppressed keeps its entry."""
    if not emails:
        return
    now = utcnow()
    rows = [
        {
            "kind": SuppressionKind.ADDRESS.value,
            "value": email,
            "value_hash": hash_value(email),
            "reason": SuppressionReason.UNSUBSCRIBED.value,
            "note": "unsubscribed by staff (bulk)",
            "created_by_id": user_id,
            "created_at": now,
        }
        for email in emails
    ]
    dialect = session.get_bind().dialect.name
    statement = (
        postgresql.insert(Suppression) if dialect == "postgresql" else sqlite.insert(Suppression)
    ).on_conflict_do_nothing(index_elements=["kind", "value_hash"])
    session.connection().execute(statement, rows)

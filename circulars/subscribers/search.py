"""Finding subscribers among a million: filters, and keyset pages that never count or skip.

A page is "the next 50 rows after id N" in id order, so page 1,000 costs what
page 1 costs; nothing here runs OFFSET or COUNT(*) over the whole table. A page
asks for one row more than it shows to know whether there is a next one.

The text box searches by the cheapest means that answers the question:
- `ana@ex…` (an address start) is a range on the unique email index;
- `@example.org` is a range on the domain index;
- anything else is a case-insensitive substring of email, name or
  organisation, scanned in id order: with LIMIT 51 the scan stops as soon as
  a page is full, so it is quick when matches are common and slowest when
  nothing matches (see docs/benchmarks.md for the figures).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    String,
    and_,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy import text as sa_text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from ..models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionKind,
)

PAGE_SIZE = 50
# Above every character, so `email < prefix + TOP` bounds a prefix range (byte order).
TOP = "\U0010ffff"
ORDERS = ("newest", "oldest")
ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]{0,63}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-zA-Z0-9]{2,8})?$")


@dataclass(frozen=True)
class SubscriberFilter:
    """What staff ask for; every field optional, all given fields must hold."""

    q: str = ""
    list_id: int | None = None
    status: str = ""  # subscriber: active / unsubscribed / blocked
    list_status: str = ""  # on list_id: confirmed / unconfirmed / unsubscribed
    language: str = ""
    attribute: str = ""  # "key=value" (exact), or "key" (present)
    suppressed: bool | None = None
    order: str = "newest"

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> tuple[SubscriberFilter, dict[str, str]]:
        """Read the filter from query-string arguments; bad values are dropped and reported.

        Returns (filter, errors by field name), so a bookmarked URL with one bad
        value still shows the rest of the filter applied and says what was ignored.
        """
        errors: dict[str, str] = {}

        def text(name: str, limit: int = 320) -> str:
            value = str(args.get(name) or "").strip()
            if len(value) > limit:
                errors[name] = f"At most {limit} characters."
                return ""
            return value

        list_id: int | None = None
        raw_list = text("list")
        if raw_list:
            if raw_list.isdigit():
                list_id = int(raw_list)
            else:
                errors["list"] = "Choose a list."
        status = text("status")
        if status and status not in set(SubscriberStatus):
            errors["status"] = "Choose active, unsubscribed or blocked."
            status = ""
        list_status = text("list_status")
        if list_status and list_status not in set(SubscriptionStatus):
            errors["list_status"] = "Choose confirmed, unconfirmed or unsubscribed."
            list_status = ""
        if list_status and list_id is None:
            errors["list_status"] = "Choose a list to filter by its subscription status."
            list_status = ""
        language = text("language", 16)
        if language and not LANGUAGE_RE.match(language):
            errors["language"] = "A code such as en, fr or ar."
            language = ""
        attribute = text("attribute", 300)
        if attribute:
            key = attribute.partition("=")[0].strip()
            if not ATTRIBUTE_KEY_RE.match(key):
                errors["attribute"] = "Write key=value, for example country=Kenya."
                attribute = ""
        suppressed: bool | None = None
        raw_suppressed = text("suppressed")
        if raw_suppressed in ("yes", "no"):
            suppressed = raw_suppressed == "yes"
        elif raw_suppressed:
            errors["suppressed"] = "Choose yes or no."
        order = text("order") or "newest"
        if order not in ORDERS:
            errors["order"] = "Choose newest or oldest first."
            order = "newest"
        found = cls(
            q=text("q"),
            list_id=list_id,
            status=status,
            list_status=list_status,
            language=language,
            attribute=attribute,
            suppressed=suppressed,
            order=order,
        )
        return found, errors

    def to_args(self) -> dict[str, str]:
        """The query-string form of this filter (only what is set), for links and forms."""
        args: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value in (None, "") or (key == "order" and value == "newest"):
                continue
            name = {"list_id": "list"}.get(key, key)
            if isinstance(value, bool):
                args[name] = "yes" if value else "no"
            else:
                args[name] = str(value)
        return args

    @property
    def is_empty(self) -> bool:
        return not any(
            value not in (None, "") for key, value in asdict(self).items() if key != "order"
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE conditions on Subscriber for this filter."""
        where: list[ColumnElement[bool]] = []
        if self.q:
            where.append(text_condition(self.q))
        if self.list_id is not None:
            on_list = select(Subscription.id).where(
                Subscription.subscriber_id == Subscriber.id,
                Subscription.list_id == self.list_id,
            )
            if self.list_status:
                on_list = on_list.where(Subscription.status == self.list_status)
            # Correlated to the subscriber only, so the condition keeps its meaning in a
            # query that also reads subscriptions (bulk counts, updates).
            where.append(on_list.correlate(Subscriber).exists())
        if self.status:
            where.append(Subscriber.status == self.status)
        if self.language:
            where.append(Subscriber.language == self.language)
        if self.attribute:
            key, has_value, value = self.attribute.partition("=")
            element = Subscriber.attributes[key.strip()].as_string()
            where.append(element == value.strip() if has_value else element.is_not(None))
        if self.suppressed is not None:
            where.append(suppressed_condition() if self.suppressed else ~suppressed_condition())
        return where

    def select(self) -> Select[Any]:
        """Subscribers matching the filter, unordered: for exports and bulk actions."""
        return select(Subscriber).where(*self.conditions())

    def ids(self) -> Select[Any]:
        """Only the ids of the matching subscribers, unordered."""
        return select(Subscriber.id).where(*self.conditions())


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_condition(q: str) -> ColumnElement[bool]:
    """The search box: an address start, a domain, or a substring (see the module docstring)."""
    needle = q.strip().lower()
    if needle.startswith("@") and len(needle) > 1:
        domain = needle[1:]
        # Range on the domain index; LIKE keeps the answer exact under any collation.
        return and_(
            Subscriber.domain >= domain,
            Subscriber.domain < domain + TOP,
            Subscriber.domain.like(_escape_like(domain) + "%", escape="\\"),
        )
    if "@" in needle and " " not in needle:
        return and_(
            Subscriber.email >= needle,
            Subscriber.email < needle + TOP,
            Subscriber.email.like(_escape_like(needle) + "%", escape="\\"),
        )
    return _Substring(needle)


#: SQLite's trigram full-text index (migration 0004) answers substrings of 3+ characters.
TRIGRAM = 3

#: Address, name and organisation joined by newlines (a search box cannot send one, so no
#: match straddles two fields): the expression of PostgreSQL's trigram index (migration
#: 0013), which the planner uses only for this exact expression.
_NEWLINE = literal_column("E'\\n'", String)
SEARCH_TEXT = (
    Subscriber.email.concat(_NEWLINE)
    .concat(Subscriber.name)
    .concat(_NEWLINE)
    .concat(Subscriber.organization)
)


class _Substring(ColumnElement[bool]):
    """A substring of the address, name or organisation, answered by an index where one exists.

    PostgreSQL: ILIKE on the three columns joined (`SEARCH_TEXT`), which the
    pg_trgm GIN index of migration 0013 serves. SQLite: the FTS5 trigram table `subscribers_fts` of
    migration 0004 (a phrase match is exactly a case-insensitive substring
    match), falling back to a scan with LIKE for one or two characters, which
    trigrams cannot answer. A scan of a million rows takes about 0.23 s when
    nothing matches; the index answers in under 2 ms.
    """

    # No Boolean type: SQLite would compare it to 1 (`(… IN …) = 1`), and the planner
    # then scans the table instead of starting from the FTS matches.
    # The SQL depends on the needle's length; not worth teaching the statement cache.
    inherit_cache = False

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def scan(self) -> ColumnElement[bool]:
        pattern = "%" + _escape_like(self.needle) + "%"
        return or_(
            Subscriber.email.like(pattern, escape="\\"),  # stored lower-cased
            _LikeFolded(Subscriber.name, literal(pattern)),
            _LikeFolded(Subscriber.organization, literal(pattern)),
        )

    def joined(self) -> ColumnElement[bool]:
        """ILIKE on the three columns joined by newlines: what the trigram index of
        migration 0013 serves, one index scan for the three."""
        pattern = "%" + _escape_like(self.needle) + "%"
        return _LikeFolded(SEARCH_TEXT, literal(pattern))


@compiles(_Substring)
def _substring_sqlite(element: _Substring, compiler: Any, **kw: Any) -> str:
    if len(element.needle) < TRIGRAM:
        return f"({compiler.process(element.scan(), **kw)})"
    phrase = '"' + element.needle.replace('"', '""') + '"'
    matches = sa_text("SELECT rowid FROM subscribers_fts WHERE subscribers_fts MATCH :phrase")
    condition = Subscriber.id.in_(matches.bindparams(phrase=phrase))
    # Parenthesised: SQLite compares a boolean expression to 1, and `= 1` must bind to all of it.
    return f"({compiler.process(condition, **kw)})"


@compiles(_Substring, "postgresql")
def _substring_postgresql(element: _Substring, compiler: Any, **kw: Any) -> str:
    # Parenthesised: the caller may AND it with more.
    return f"({compiler.process(element.joined(), **kw)})"


class _LikeFolded(FunctionElement[bool]):
    """`column LIKE pattern` ignoring case: ILIKE on PostgreSQL, plain LIKE on SQLite.

    SQLite's LIKE already ignores ASCII case (and its lower() knows no more than
    ASCII), while SQLAlchemy's ilike() would wrap both sides in lower(), which
    made a full scan of a million rows 2.7 times slower (557 ms against 205 ms).
    """

    type = Boolean()
    name = "like_folded"
    inherit_cache = True


@compiles(_LikeFolded)
def _like_folded(element: _LikeFolded, compiler: Any, **kw: Any) -> str:
    column, pattern = list(element.clauses)
    # Parenthesised: SQLite compares a boolean function to 1, and `= 1` must not bind to ESCAPE.
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(pattern, **kw)} ESCAPE '\\')"


@compiles(_LikeFolded, "postgresql")
def _ilike(element: _LikeFolded, compiler: Any, **kw: Any) -> str:
    column, pattern = list(element.clauses)
    return f"({compiler.process(column, **kw)} ILIKE {compiler.process(pattern, **kw)} ESCAPE '\\')"


def suppressed_condition() -> ColumnElement[bool]:
    """The subscriber's address, or their domain (unless exempt), is on the suppression list.

    The same test as the send snapshot (sending.service.recipients_query).
    """
    by_address = (
        select(Suppression.id)
        .where(Suppression.kind == SuppressionKind.ADDRESS, Suppression.value == Subscriber.email)
        .correlate(Subscriber)
        .exists()
    )
    by_domain = (
        select(Suppression.id)
        .where(Suppression.kind == SuppressionKind.DOMAIN, Suppression.value == Subscriber.domain)
        .correlate(Subscriber)
        .exists()
    )
    return or_(by_address, and_(~Subscriber.suppression_exempt, by_domain))


@dataclass
class KeysetPage:
    """One page of subscribers and the cursors around it."""

    items: list[Subscriber]
    has_next: bool
    has_prev: bool
    next_after: int | None  # pass as `after` for the next page
    prev_before: int | None  # pass as `before` for the previous page
    per_page: int = PAGE_SIZE
    subscriptions: dict[int, list[Subscription]] = field(default_factory=dict)

    @property
    def count_label(self) -> str:
        """`12 subscribers` when the whole result is on this page, else `50+`-style."""
        if not self.has_next and not self.has_prev:
            n = len(self.items)
            return f"{n} subscriber{'s' if n != 1 else ''}"
        return f"more than {self.per_page} subscribers"


def keyset_page(
    session: Session,
    query_filter: SubscriberFilter,
    *,
    after: int | None = None,
    before: int | None = None,
    per_page: int = PAGE_SIZE,
    with_subscriptions: bool = True,
) -> KeysetPage:
    """The page after id `after` (or before id `before`), in the filter's order.

    "After" and "before" are in display order: with newest first, the next page
    holds smaller ids. Reading backwards and reaching the start gives the first
    page again, so a "previous" link never shows a short page.
    """
    newest = query_filter.order == "newest"
    base = query_filter.select()
    backwards = before is not None and after is None
    if backwards:
        assert before is not None
        query = base.where(Subscriber.id > before if newest else Subscriber.id < before)
        query = query.order_by(Subscriber.id.asc() if newest else Subscriber.id.desc())
        rows = list(session.scalars(query.limit(per_page + 1)))
        if len(rows) <= per_page:
            return keyset_page(
                session, query_filter, per_page=per_page, with_subscriptions=with_subscriptions
            )
        items = list(reversed(rows[:per_page]))
        has_prev, has_next = True, True
    else:
        query = base
        if after is not None:
            query = query.where(Subscriber.id < after if newest else Subscriber.id > after)
        query = query.order_by(Subscriber.id.desc() if newest else Subscriber.id.asc())
        rows = list(session.scalars(query.limit(per_page + 1)))
        items = rows[:per_page]
        has_next = len(rows) > per_page
        has_prev = after is not None
    page = KeysetPage(
        items=items,
        has_next=has_next,
        has_prev=has_prev,
        next_after=items[-1].id if has_next and items else None,
        prev_before=items[0].id if has_prev and items else None,
        per_page=per_page,
    )
    if with_subscriptions and items:
        page.subscriptions = subscriptions_of(session, [item.id for item in items])
    return page


def subscriptions_of(
    session: Session, subscriber_ids: Sequence[int]
) -> dict[int, list[Subscription]]:
    """The subscriptions of a page of subscribers, in one query (for the "lists" column)."""
    found: dict[int, list[Subscription]] = {sid: [] for sid in subscriber_ids}
    if not subscriber_ids:
        return found
    for subscription in session.scalars(
        select(Subscription)
        .where(Subscription.subscriber_id.in_(list(subscriber_ids)))
        .order_by(Subscription.list_id)
    ):
        found[subscription.subscriber_id].append(subscription)
    return found


def count(session: Session, query_filter: SubscriberFilter) -> int:
    """The exact number of matches: for confirmation pages, not for every page view."""
    if query_filter.is_empty:
        return int(session.scalar(select(func.count()).select_from(Subscriber)) or 0)
    subquery = query_filter.ids().subquery()
    return int(session.scalar(select(func.count()).select_from(subquery)) or 0)


def estimated_total(session: Session) -> int | None:
    """The planner's estimate of the table's size on PostgreSQL (free); None elsewhere."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    estimate = session.scalar(
        sa_text("SELECT reltuples FROM pg_class WHERE oid = 'subscribers'::regclass")
    )
    return int(estimate) if estimate is not None and estimate > 0 else None


def with_changes(query_filter: SubscriberFilter, **changes: Any) -> SubscriberFilter:
    """A copy with some fields changed (the template's "remove this filter" links)."""
    return replace(query_filter, **changes)


__all__ = [
    "PAGE_SIZE",
    "KeysetPage",
    "SubscriberFilter",
    "count",
    "estimated_total",
    "keyset_page",
    "subscriptions_of",
    "suppressed_condition",
    "text_condition",
]

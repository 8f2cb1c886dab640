"""Finding subscribers: each search field and filter, and keyset pages that show every row once."""

from __future__ import annotations

import pytest

from circulars.models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from circulars.subscribers.search import SubscriberFilter, count, keyset_page
from circulars.subscribers.suppression import suppress


@pytest.fixture
def people(session):
    members = MailingList(slug="members", name="Members")
    partners = MailingList(slug="partners", name="Partners")
    session.add_all([members, partners])
    session.flush()
    rows = {
        "ana": Subscriber(
            email="ana.silva@example.org",
            name="Ana Silva",
            organization="Caritas Lisboa",
            language="pt",
            attributes={"country": "Portugal", "role": "board"},
        ),
        "bob": Subscriber(
            email="bob@partner.example.org",
            name="Bob Martin",
            organization="Red Cross",
            language="fr",
            attributes={"country": "France"},
        ),
        "carla": Subscriber(
            email="carla_x@example.org",
            name="Carla 100% Díaz",
            organization="ACNUR",
            language="es",
            status=SubscriberStatus.UNSUBSCRIBED,
        ),
        "dan": Subscriber(email="dan@blocked.example.org", name="Dan", language="en"),
    }
    session.add_all(rows.values())
    session.flush()
    session.add_all(
        [
            Subscription(subscriber_id=rows["ana"].id, list_id=members.id),
            Subscription(
                subscriber_id=rows["bob"].id,
                list_id=members.id,
                status=SubscriptionStatus.UNCONFIRMED,
            ),
            Subscription(subscriber_id=rows["bob"].id, list_id=partners.id),
            Subscription(
                subscriber_id=rows["carla"].id,
                list_id=partners.id,
                status=SubscriptionStatus.UNSUBSCRIBED,
            ),
        ]
    )
    suppress(session, domain="blocked.example.org", reason="blocked")
    session.commit()
    return {"members": members, "partners": partners, **rows}


def found(session, **args):
    query_filter, errors = SubscriberFilter.from_args(args)
    assert errors == {}
    page = keyset_page(session, query_filter)
    return sorted(item.email.split("@")[0] for item in page.items)


def test_text_search_by_email_start_domain_name_and_organisation(session, people):
    assert found(session, q="ana.silva@ex") == ["ana.silva"]
    assert found(session, q="ANA.SILVA@EXAMPLE.ORG") == ["ana.silva"]
    assert found(session, q="@partner.example") == ["bob"]
    assert found(session, q="@example.org") == ["ana.silva", "carla_x"]
    assert found(session, q="martin") == ["bob"]
    assert found(session, q="red cross") == ["bob"]
    assert found(session, q="silva") == ["ana.silva"]
    assert found(session, q="100%") == ["carla_x"]  # % is a character, not a wildcard
    assert found(session, q="a_x") == ["carla_x"]
    assert found(session, q="nobody here") == []


def test_a_text_search_does_not_match_across_two_fields(session, people):
    # "silva" ends the name and "caritas" starts the organisation: together they are no match.
    assert found(session, q="silva caritas") == []
    assert found(session, q="example.org ana") == []
    assert found(session, q="lisboa") == ["ana.silva"]


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_a_text_search_on_postgresql_uses_the_trigram_index(session, people):
    """The planner uses an expression index only for that exact expression."""
    from sqlalchemy import select, text
    from sqlalchemy.dialects import postgresql

    from circulars.subscribers.search import text_condition

    query = select(Subscriber.id).where(text_condition("caritas"))
    sql = str(
        query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    ).replace("%%", "%")
    session.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(session.scalars(text("EXPLAIN " + sql)))
    session.rollback()
    assert "ix_subscribers_search_trgm" in plan, plan


def test_filters(session, people):
    members, partners = people["members"], people["partners"]
    assert found(session, list=str(members.id)) == ["ana.silva", "bob"]
    assert found(session, list=str(members.id), list_status="confirmed") == ["ana.silva"]
    assert found(session, list=str(members.id), list_status="unconfirmed") == ["bob"]
    assert found(session, list=str(partners.id), list_status="unsubscribed") == ["carla_x"]
    assert found(session, status="unsubscribed") == ["carla_x"]
    assert found(session, status="active") == ["ana.silva", "bob", "dan"]
    assert found(session, language="fr") == ["bob"]
    assert found(session, attribute="country=Portugal") == ["ana.silva"]
    assert found(session, attribute="role") == ["ana.silva"]
    assert found(session, suppressed="yes") == ["dan"]
    assert found(session, suppressed="no") == ["ana.silva", "bob", "carla_x"]
    assert found(session, q="@example.org", status="active") == ["ana.silva"]


def test_bad_filter_values_are_reported_and_ignored(session, people):
    query_filter, errors = SubscriberFilter.from_args(
        {"status": "gone", "language": "english!", "list_status": "confirmed", "suppressed": "?"}
    )
    assert set(errors) == {"status", "language", "list_status", "suppressed"}
    assert query_filter.is_empty
    assert len(keyset_page(session, query_filter).items) == 4


def test_filter_round_trips_through_the_query_string():
    query_filter, _ = SubscriberFilter.from_args(
        {"q": "ana", "list": "3", "list_status": "confirmed", "suppressed": "no", "order": "oldest"}
    )
    assert SubscriberFilter.from_args(query_filter.to_args())[0] == query_filter


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_keyset_pages_show_every_row_once_forwards_and_back(session, order):
    session.add_all(Subscriber(email=f"person{n:03d}@example.org") for n in range(120))
    session.commit()
    query_filter = SubscriberFilter(order=order)
    pages = [keyset_page(session, query_filter)]
    while pages[-1].has_next:
        pages.append(keyset_page(session, query_filter, after=pages[-1].next_after))
    assert [len(page.items) for page in pages] == [50, 50, 20]
    ids = [item.id for page in pages for item in page.items]
    assert len(ids) == len(set(ids)) == 120
    assert ids == sorted(ids, reverse=order == "newest")
    assert not pages[0].has_prev and pages[1].has_prev and not pages[2].has_next

    back = keyset_page(session, query_filter, before=pages[2].prev_before)
    assert [item.id for item in back.items] == [item.id for item in pages[1].items]
    first = keyset_page(session, query_filter, before=back.prev_before)
    assert [item.id for item in first.items] == [item.id for item in pages[0].items]
    assert not first.has_prev
    assert count(session, query_filter) == 120
    assert pages[0].count_label == "more than 50 subscribers"


def test_small_results_say_how_many(session, people):
    page = keyset_page(session, SubscriberFilter(q="martin"))
    assert page.count_label == "1 subscriber"
    assert [s.list_id for s in page.subscriptions[people["bob"].id]] == sorted(
        [people["members"].id, people["partners"].id]
    )

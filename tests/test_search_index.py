"""Substring search stays right as subscribers change (SQLite's FTS5 table follows by triggers)."""

from __future__ import annotations

from sqlalchemy import delete, select

from circulars.models import Subscriber
from circulars.subscribers.search import SubscriberFilter


def found(session, q: str) -> list[str]:
    query = SubscriberFilter(q=q).select().order_by(Subscriber.email)
    return [row.email for row in session.scalars(query)]


def test_search_follows_inserts_updates_and_deletes(session):
    session.add_all(
        [
            Subscriber(email="amina@example.org", name="Amina Haddad", organization="Caritas"),
            Subscriber(email="jo@example.org", name="Jo Okafor", organization="Red Cross"),
        ]
    )
    session.commit()
    assert found(session, "haddad") == ["amina@example.org"]
    assert found(session, "CARITAS") == ["amina@example.org"]  # case does not matter
    assert found(session, "red cr") == ["jo@example.org"]
    assert found(session, "ok") == ["jo@example.org"]  # two letters: answered by a scan
    assert found(session, "nobody") == []

    amina = session.scalar(select(Subscriber).where(Subscriber.email == "amina@example.org"))
    amina.name = "Amina Mansour"
    session.commit()
    assert found(session, "haddad") == []
    assert found(session, "mansour") == ["amina@example.org"]

    session.execute(delete(Subscriber).where(Subscriber.email == "jo@example.org"))
    session.commit()
    assert found(session, "okafor") == []
    assert found(session, 'quote"d') == []  # FTS syntax in the box is only text

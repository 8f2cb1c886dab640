"""Who a circular goes to: digest readers, paused people and suppressed addresses are left out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from circulars.models import (
    Circular,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from circulars.sending.service import count_recipients, recipients_query


@pytest.fixture
def setup(session):
    members = MailingList(slug="members", name="Members")
    circular = Circular(title="Update")
    session.add_all([members, circular])
    session.flush()
    people = {}
    for key in ("every", "weekly", "monthly", "paused", "resumed", "blocked", "domain", "exempt"):
        domain = "blocked.example.org" if key in ("domain", "exempt") else "example.org"
        person = Subscriber(email=f"{key}@{domain}", name=key.title())
        session.add(person)
        session.flush()
        session.add(
            Subscription(
                subscriber_id=person.id,
                list_id=members.id,
                status=SubscriptionStatus.CONFIRMED,
                delivery={"weekly": "weekly", "monthly": "monthly"}.get(key, "every"),
            )
        )
        people[key] = person
    people["paused"].paused_until = utcnow() + timedelta(days=14)
    people["resumed"].paused_until = utcnow() - timedelta(minutes=1)
    people["exempt"].suppression_exempt = True
    session.add_all(
        [
            Suppression(
                kind="address", value="blocked@example.org", value_hash="x" * 64, reason="blocked"
            ),
            Suppression(
                kind="domain", value="blocked.example.org", value_hash="y" * 64, reason="blocked"
            ),
        ]
    )
    session.commit()
    return members, circular, people


def test_only_those_who_take_every_circular_and_may_be_mailed(session, setup):
    members, circular, people = setup
    rows = session.execute(recipients_query(circular.id, [members.id])).all()
    assert sorted(row.email for row in rows) == [
        "every@example.org",
        "exempt@blocked.example.org",
        "resumed@example.org",
    ]
    assert count_recipients(session, circular.id, [members.id]) == 3


def test_domain_is_kept_from_the_address(session, setup):
    _members, _circular, people = setup
    stored = session.scalar(select(Subscriber.domain).where(Subscriber.id == people["domain"].id))
    assert stored == "blocked.example.org"

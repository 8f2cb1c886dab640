"""The suppression list: addresses and domains that are never mailed, and overrides by staff."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from circulars.models import (
    Circular,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionOverride,
    User,
)
from circulars.sending.service import count_recipients
from circulars.subscribers.addresses import InvalidAddress
from circulars.subscribers.service import SubscriptionRefused, add_to_list
from circulars.subscribers.suppression import (
    LiftRefused,
    hash_value,
    is_suppressed,
    lift_for,
    normalise_domain,
    suppress,
    suppressed_among,
    unsuppress,
)


@pytest.fixture
def members(session):
    found = MailingList(slug="members", name="Members")
    session.add(found)
    session.commit()
    return found


@pytest.fixture
def staff(session):
    user = User(email="staff@example.org", password_hash="x", role="admin")
    session.add(user)
    session.commit()
    return user


def test_hash_is_sha256_of_the_normalised_value():
    assert hash_value("ana@example.org") == hashlib.sha256(b"ana@example.org").hexdigest()
    assert hash_value(" Ana@Example.ORG ") == hash_value("ana@example.org")


def test_domains_are_normalised_like_subscriber_domains():
    assert normalise_domain("@Example.ORG ") == "example.org"
    assert normalise_domain("BÜCHER.example") == "bücher.example"
    for bad in ("", "ana@example.org", "not a domain", "localhost"):
        with pytest.raises(InvalidAddress):
            normalise_domain(bad)


def test_address_suppression_found_by_any_spelling(session):
    row = suppress(session, email="Ana@Example.org", reason="hard_bounce")
    session.commit()
    assert row.value == "ana@example.org"
    assert is_suppressed(session, "ANA@example.org").id == row.id
    assert is_suppressed(session, "bob@example.org") is None


def test_suppress_is_idempotent_and_keeps_the_stronger_reason(session):
    first = suppress(session, email="ana@example.org", reason="hard_bounce")
    again = suppress(session, email="ana@example.org", reason="soft_bounce")
    assert again.id == first.id and again.reason == "hard_bounce"
    stronger = suppress(session, email="ana@example.org", reason="complaint", note="marked spam")
    assert stronger.id == first.id and stronger.reason == "complaint"
    assert stronger.note == "marked spam"
    session.commit()
    assert session.scalar(select(func.count()).select_from(Suppression)) == 1


def test_deleted_keeps_only_the_hash_and_still_matches(session):
    suppress(session, email="ana@example.org", reason="unsubscribed")
    row = suppress(session, email="ana@example.org", reason="deleted")
    session.commit()
    assert row.value is None and row.value_hash == hash_value("ana@example.org")
    assert is_suppressed(session, "ana@example.org").reason == "deleted"
    assert suppressed_among(session, ["ana@example.org", "bob@example.org"]) == {"ana@example.org"}


def test_domain_suppression_unless_exempt(session):
    suppress(session, domain="Blocked.example.org", reason="blocked", note="spam trap")
    session.add(Subscriber(email="exempt@blocked.example.org", suppression_exempt=True))
    session.commit()
    assert is_suppressed(session, "someone@blocked.example.org").kind == "domain"
    assert is_suppressed(session, "exempt@blocked.example.org") is None
    assert is_suppressed(session, "someone@example.org") is None
    chunk = [
        "someone@blocked.example.org",
        "exempt@blocked.example.org",
        "fine@example.org",
    ]
    assert suppressed_among(session, chunk) == {"someone@blocked.example.org"}
    assert suppressed_among(session, []) == set()


def test_reasons_among_say_what_is_suppressed_would_say(session):
    from circulars.subscribers.suppression import describe, suppression_reasons_among

    suppress(session, domain="blocked.example.org", reason="blocked")
    suppress(session, email="ana@blocked.example.org", reason="complaint")
    suppress(session, email="bob@example.org", reason="hard_bounce")
    session.add(Subscriber(email="exempt@blocked.example.org", suppression_exempt=True))
    session.commit()
    chunk = [
        "ana@blocked.example.org",  # its own entry comes before its domain's
        "carla@blocked.example.org",
        "exempt@blocked.example.org",
        "bob@example.org",
        "fine@example.org",
    ]
    expected = {}
    for email in chunk:
        found = is_suppressed(session, email)
        if found is not None:
            expected[email] = describe(found)
    assert (
        suppression_reasons_among(session, chunk)
        == expected
        == {
            "ana@blocked.example.org": "spam complaint",
            "carla@blocked.example.org": "blocked by the secretariat",
            "bob@example.org": "hard bounce",
        }
    )


def test_suppress_needs_exactly_one_valid_target(session):
    with pytest.raises(ValueError):
        suppress(session, reason="blocked")
    with pytest.raises(ValueError):
        suppress(session, email="a@example.org", domain="example.org", reason="blocked")
    with pytest.raises(InvalidAddress):
        suppress(session, email="not an address", reason="blocked")
    with pytest.raises(ValueError):
        suppress(session, email="a@example.org", reason="because")


def test_blocking_marks_the_subscriber_but_keeps_subscriptions(session, members):
    subscriber, _ = add_to_list(session, members, "ana@example.org")
    suppress(session, email="ana@example.org", reason="blocked")
    session.commit()
    assert subscriber.status == SubscriberStatus.BLOCKED
    assert session.scalar(select(Subscription.status)) == SubscriptionStatus.CONFIRMED


def test_unsuppress_records_who_and_reactivates_a_blocked_subscriber(session, members, staff):
    subscriber, _ = add_to_list(session, members, "ana@example.org")
    row = suppress(session, email="ana@example.org", reason="blocked")
    session.commit()
    removed = unsuppress(session, row.id, staff.id)
    session.commit()
    assert removed is not None
    assert is_suppressed(session, "ana@example.org") is None
    assert subscriber.status == SubscriberStatus.ACTIVE
    audit = session.scalar(select(SuppressionOverride))
    assert (audit.email, audit.user_id, audit.suppression_reason) == (
        "ana@example.org",
        staff.id,
        "blocked",
    )
    assert unsuppress(session, row.id, staff.id) is None


def test_add_to_list_refuses_a_suppressed_address_and_names_the_reason(session, members):
    suppress(session, email="ana@example.org", reason="hard_bounce")
    session.commit()
    with pytest.raises(SubscriptionRefused) as refused:
        add_to_list(session, members, "Ana@example.org")
    assert "suppression list (hard bounce)" in str(refused.value)
    assert refused.value.overridable
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_add_to_list_refuses_an_address_at_a_blocked_domain(session, members):
    suppress(session, domain="blocked.example.org", reason="blocked")
    session.commit()
    with pytest.raises(SubscriptionRefused, match="blocked by the secretariat"):
        add_to_list(session, members, "ana@blocked.example.org")


def test_override_adds_and_records_who_and_why(session, members, staff):
    suppress(session, email="ana@example.org", reason="hard_bounce")
    session.commit()
    with pytest.raises(SubscriptionRefused):
        add_to_list(session, members, "ana@example.org", override_reason="   ", user_id=staff.id)
    session.rollback()
    subscriber, created = add_to_list(
        session,
        members,
        "ana@example.org",
        override_reason="She fixed her mailbox and asked by phone",
        user_id=staff.id,
    )
    session.commit()
    assert created
    assert is_suppressed(session, "ana@example.org") is None
    override = session.scalar(select(SuppressionOverride))
    assert override.email == "ana@example.org"
    assert override.user_id == staff.id
    assert override.list_id == members.id
    assert override.reason == "She fixed her mailbox and asked by phone"
    assert (override.suppression_kind, override.suppression_reason) == ("address", "hard_bounce")


def test_override_of_a_domain_exempts_only_that_address(session, members, staff):
    suppress(session, domain="blocked.example.org", reason="blocked")
    session.commit()
    add_to_list(
        session, members, "ana@blocked.example.org", override_reason="partner", user_id=staff.id
    )
    session.commit()
    assert is_suppressed(session, "ana@blocked.example.org") is None
    assert is_suppressed(session, "bob@blocked.example.org") is not None
    assert session.scalar(select(Subscriber.suppression_exempt)) is True


def test_override_brings_back_someone_who_unsubscribed_from_everything(session, members, staff):
    session.add(Subscriber(email="ana@example.org", status=SubscriberStatus.UNSUBSCRIBED))
    suppress(session, email="ana@example.org", reason="unsubscribed")
    session.commit()
    with pytest.raises(SubscriptionRefused, match="unsubscribed from everything"):
        add_to_list(session, members, "ana@example.org")
    session.rollback()
    subscriber, created = add_to_list(
        session, members, "ana@example.org", override_reason="asked us by letter", user_id=staff.id
    )
    session.commit()
    assert not created and subscriber.status == SubscriberStatus.ACTIVE


def test_lift_for_refuses_without_reason_or_without_suppression(session, staff):
    suppress(session, email="ana@example.org", reason="complaint")
    session.commit()
    with pytest.raises(LiftRefused):
        lift_for(session, "ana@example.org", user_id=staff.id, reason=" ", list_id=None)
    with pytest.raises(LiftRefused):
        lift_for(session, "bob@example.org", user_id=staff.id, reason="why", list_id=None)
    assert is_suppressed(session, "ana@example.org") is not None


def test_the_send_snapshot_leaves_out_a_blocked_domain(session, members):
    circular = Circular(title="Update")
    session.add(circular)
    for local in ("ana", "bob", "eve"):
        add_to_list(session, members, f"{local}@partner.example.org")
    add_to_list(session, members, "zoe@example.org")
    session.commit()
    assert count_recipients(session, circular.id, [members.id]) == 4
    suppress(session, domain="partner.example.org", reason="blocked")
    session.commit()
    assert count_recipients(session, circular.id, [members.id]) == 1
    suppress(session, email="zoe@example.org", reason="hard_bounce")
    session.commit()
    assert count_recipients(session, circular.id, [members.id]) == 0

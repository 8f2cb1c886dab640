"""The demo content a first start creates: enough to look at, send, and see a digest."""

from __future__ import annotations

from sqlalchemy import func, select

from circulars.demo import seed
from circulars.models import Circular, MailingList, Subscriber, Subscription, User


def test_seed_creates_lists_people_and_a_bilingual_draft_once(app, session):
    files = app.extensions["circulars.files"]
    said = "\n".join(seed(session, files))
    assert "admin@example.org" in said

    lists = {item.slug: item for item in session.scalars(select(MailingList))}
    assert set(lists) == {"members", "partners"}
    assert session.scalar(select(func.count(Subscriber.id))) == 7
    weekly = session.scalars(select(Subscription).where(Subscription.delivery == "weekly")).all()
    assert [
        (item.subscriber.email, item.list_id, item.digest_since is not None) for item in weekly
    ] == [("programme@example.net", lists["partners"].id, True)]
    draft = session.scalars(select(Circular)).one()
    assert [item.slug for item in draft.lists] == ["members", "partners"]
    assert draft.is_draft and draft.default_language == "en"
    assert [item.language for item in draft.translations] == ["fr"]
    assert draft.translations[0].title.startswith("Deuxième cycle")
    assert [item.filename for item in draft.attachments] == ["Working text – second round.txt"]

    # A second start finds the content there and adds nothing.
    assert list(seed(session, files)) == []
    assert session.scalar(select(func.count(User.id))) == 1
    assert session.scalar(select(func.count(Circular.id))) == 1
    assert session.scalar(select(func.count(Subscriber.id))) == 7

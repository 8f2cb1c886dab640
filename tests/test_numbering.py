"""Circular numbers: given at the first send, unique, never skipped or repeated."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from circulars.models import Circular, MailingList, Send
from circulars.sending.numbering import peek_next_number
from circulars.sending.service import SendRefused, create_send
from circulars.subscribers.service import add_to_list


@pytest.fixture
def members(session):
    mailing_list = MailingList(slug="members", name="Members")
    session.add(mailing_list)
    session.flush()
    for index in range(3):
        add_to_list(session, mailing_list, f"m{index}@example.org")
    session.commit()
    return mailing_list


def make_drafts(session, count):
    drafts = [Circular(title=f"Draft {index}") for index in range(count)]
    session.add_all(drafts)
    session.commit()
    return [draft.id for draft in drafts]


def run_at_once(app, jobs):
    """Run each job in its own thread and session, released together by a barrier."""
    from circulars.extensions import db

    barrier = threading.Barrier(len(jobs))
    errors = []

    def run(job):
        with app.app_context():
            session = db.session_factory()
            try:
                barrier.wait(timeout=30)
                job(session)
                session.commit()
            except Exception as exc:  # noqa: BLE001  (reported below, with its job)
                session.rollback()
                errors.append(exc)
            finally:
                session.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_a_draft_has_no_number_until_sent(session, members):
    (draft_id,) = make_drafts(session, 1)
    assert session.get(Circular, draft_id).number is None
    assert peek_next_number(session) == 1
    send = create_send(session, draft_id, [members.id])
    session.commit()
    assert send.circular.number == 1
    assert send.circular.status == "sent"
    assert peek_next_number(session) == 2


def test_concurrent_sends_of_different_drafts_get_consecutive_numbers(app, session, members):
    ids = make_drafts(session, 8)
    errors = run_at_once(app, [lambda s, cid=cid: create_send(s, cid, [members.id]) for cid in ids])
    assert errors == []
    session.expire_all()
    numbers = sorted(session.scalars(select(Circular.number)))
    assert numbers == list(range(1, 9))


def test_concurrent_sends_of_the_same_draft_share_one_number(app, session, members):
    (draft_id,) = make_drafts(session, 1)
    errors = run_at_once(app, [lambda s: create_send(s, draft_id, [members.id]) for _ in range(4)])
    assert errors == []
    session.expire_all()
    assert session.get(Circular, draft_id).number == 1
    assert len(session.scalars(select(Send)).all()) == 4
    (next_id,) = make_drafts(session, 1)
    create_send(session, next_id, [members.id])
    session.commit()
    assert session.get(Circular, next_id).number == 2


def test_a_rolled_back_send_gives_its_number_back(session, members):
    first, second = make_drafts(session, 2)
    create_send(session, first, [members.id])
    session.rollback()
    assert session.get(Circular, first).number is None
    create_send(session, second, [members.id])
    session.commit()
    assert session.get(Circular, second).number == 1


def test_a_refused_send_takes_no_number(session, members):
    empty = MailingList(slug="empty", name="Empty")
    session.add(empty)
    session.commit()
    (draft_id,) = make_drafts(session, 1)
    with pytest.raises(SendRefused, match="No one would receive it"):
        create_send(session, draft_id, [empty.id])
    session.rollback()
    with pytest.raises(SendRefused, match="at least one list"):
        create_send(session, draft_id, [])
    session.rollback()
    assert session.get(Circular, draft_id).number is None
    assert peek_next_number(session) == 1

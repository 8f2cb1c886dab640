"""Demo content for a first start, so a newcomer has something to look at and send."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from .accounts import create_user
from .language_versions import add_version
from .models import (
    Attachment,
    Circular,
    DeliveryMode,
    MailingList,
    Role,
    Subscription,
    User,
)
from .models.base import utcnow
from .storage import FileStore
from .subscribers.service import add_to_list

DEMO_BODY = """\
Colleagues,

The second drafting round of the regional declaration on fair recruitment ends
on **15 January**. The secretariat has merged the comments received so far into
the attached working text.

What we ask of member organisations:

1. Read the working text, in particular sections 3 (fees charged to workers) and
   5 (access to justice).
2. Send written comments by **8 January**, using the comment form.
3. Tell us who will speak for your organisation at the closing session.

> Every comment is read, and the drafting group will explain in its report
> which ones were taken up and why.

Questions about the process go to the secretariat at any time.
"""

DEMO_BODY_FR = """\
Chers collègues,

Le deuxième cycle de rédaction de la déclaration régionale sur le recrutement
équitable se termine le **15 janvier**. Le secrétariat a intégré au texte de
travail ci-joint les commentaires reçus jusqu'ici.

Ce que nous demandons aux organisations membres :

1. Lire le texte de travail, en particulier les sections 3 (frais imposés aux
   travailleurs) et 5 (accès à la justice).
2. Envoyer leurs commentaires écrits avant le **8 janvier**.
3. Nous dire qui parlera au nom de leur organisation lors de la séance de clôture.

Le secrétariat répond à toute question sur le processus.
"""

PEOPLE = [
    ("amina.diallo@example.org", "Amina Diallo", "fr", "Réseau des travailleurs migrants"),
    ("li.wei@example.org", "Li Wei", "zh", "Workers' Rights Centre"),
    ("sara.haddad@example.org", "Sara Haddad", "ar", "Migrant Solidarity Forum"),
    ("jose.ramos@example.org", "José Ramos", "es", "Coalición por la Migración Justa"),
    ("olga.petrova@example.org", "Olga Petrova", "ru", "Labour Mobility Watch"),
    ("james.okoro@example.org", "James Okoro", "en", "Domestic Workers Alliance"),
]


def seed(session: Session, files: FileStore) -> Iterator[str]:
    if session.scalar(select(User.id).where(User.role == Role.ADMIN)) is None:
        password = secrets.token_urlsafe(12)
        user = create_user(session, "admin@example.org", password, Role.ADMIN)
        yield f" * Created the admin account {user.email} with the password {password}"
        yield "   (shown once; create more with: circulars users create EMAIL --role admin)"
    if session.scalar(select(MailingList.id)) is None:
        members = MailingList(
            slug="members", name="Member organisations", description="Every member of the network."
        )
        partners = MailingList(
            slug="partners", name="Partners", description="Allied organisations and donors."
        )
        session.add_all([members, partners])
        session.flush()
        for index, (email, name, language, organization) in enumerate(PEOPLE):
            add_to_list(
                session, members, email, name=name, language=language, organization=organization
            )
            if index % 2 == 0:
                add_to_list(
                    session,
                    partners,
                    email,
                    name=name,
                    language=language,
                    organization=organization,
                )
        donor, _ = add_to_list(
            session, partners, "programme@example.net", name="", organization="Example Foundation"
        )
        # The donor, on no other list, reads partners as a weekly digest instead.
        subscription = session.scalars(
            select(Subscription).where(
                Subscription.subscriber_id == donor.id, Subscription.list_id == partners.id
            )
        ).one()
        subscription.delivery = DeliveryMode.WEEKLY
        subscription.digest_since = utcnow()
        stored = files.save(
            io.BytesIO(
                b"Regional declaration on fair recruitment\nWorking text, second round\n\n"
                b"Section 3. No recruitment fee shall be charged to workers.\n"
            ),
            "Working text – second round.txt",
        )
        circular = Circular(
            title="Second drafting round of the declaration on fair recruitment",
            body_markdown=DEMO_BODY,
        )
        circular.lists = [members, partners]
        circular.attachments = [
            Attachment(
                filename=stored.filename,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
            )
        ]
        session.add(circular)
        session.flush()
        add_version(
            session,
            circular,
            "fr",
            "Deuxième cycle de rédaction de la déclaration sur le recrutement équitable",
            DEMO_BODY_FR,
        )
        yield (
            " * Created demo lists (members, partners), 7 subscribers (one on the weekly digest)"
            " and a draft circular in English and French"
        )
    session.commit()

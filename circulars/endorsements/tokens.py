"""The signed, expiring link that confirms an endorsement's email address.

The token carries the submission itself (organisation as typed, contact, email,
comment), not only the row's id: a second submission for an organisation that
is already confirmed must not change its contact details until the new address
is confirmed too, and the link is where those details wait. It is signed
(itsdangerous), so nobody can change them on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..subscribers.tokens import TokenError

SALT = "circulars.endorse-confirm"


@dataclass(frozen=True)
class Submission:
    """What one use of the form said; validated and normalised by service.clean_submission."""

    organisation: str
    country: str
    contact_name: str
    email: str
    comment: str


@dataclass(frozen=True)
class ConfirmToken:
    endorsement_id: int
    submission: Submission
    #: When the link was made (to the second): right after its submission was stored.
    issued_at: datetime | None = None


class EndorsementTokens:
    def __init__(self, secret_key: str, max_age: timedelta) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=SALT)
        self._max_age = int(max_age.total_seconds())

    def make(self, endorsement_id: int, submission: Submission) -> str:
        return str(
            self._serializer.dumps(
                [
                    endorsement_id,
                    submission.organisation,
                    submission.country,
                    submission.contact_name,
                    submission.email,
                    submission.comment,
                ]
            )
        )

    def read(self, token: str) -> ConfirmToken:
        """Raises TokenError (expired, or not a link we made)."""
        try:
            payload, issued_at = self._serializer.loads(
                token, max_age=self._max_age, return_timestamp=True
            )
        except SignatureExpired as exc:
            raise TokenError("This link has expired.", expired=True) from exc
        except BadSignature as exc:
            raise TokenError("This link is not valid.") from exc
        if (
            not isinstance(payload, list)
            or len(payload) != 6
            or not isinstance(payload[0], int)
            or isinstance(payload[0], bool)
            or not all(isinstance(item, str) for item in payload[1:])
        ):
            raise TokenError("This link is not valid.")
        return ConfirmToken(payload[0], Submission(*payload[1:]), issued_at)

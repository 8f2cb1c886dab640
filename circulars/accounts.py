"""Staff accounts: argon2 password hashes and a login that does not reveal who exists."""

from __future__ import annotations

import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Role, User, utcnow
from .subscribers.addresses import InvalidAddress, normalise_email

_hasher = PasswordHasher()
# Verified against when the address is unknown, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")
MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def create_user(session: Session, email: str, password: str, role: str = Role.EDITOR) -> User:
    if role not in {r.value for r in Role}:
        raise AccountError(f"Unknown role {role!r}; use one of {', '.join(r.value for r in Role)}.")
    try:
        address = normalise_email(email)
    except InvalidAddress as exc:
        raise AccountError(f"Invalid email address: {exc}") from None
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise AccountError(f"A user with the address {address} exists already.")
    user = User(email=address, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user if the address and password match an active account, else None."""
    try:
        address = normalise_email(email)
    except InvalidAddress:
        address = email.strip().lower()
    user = session.scalar(select(User).where(func.lower(User.email) == address))
    if user is None or not user.active:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    return user

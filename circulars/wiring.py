"""Builds the domain's service objects from the settings, for the web app and the worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .branding_settings import load_branding
from .config import ConfigError, Settings
from .mail.branding import Branding
from .mail.dkim import DkimKeyError, DkimSigner, load_keys, signing_messenger
from .mail.ratelimit import relay_state
from .mail.relays import RelayPool
from .mail.transport import Messenger, SmtpMessenger
from .sending.context import SendContext
from .storage import FileStore
from .subscribers.bounce_intake import BounceIntake
from .subscribers.bounces import BouncePolicy
from .subscribers.links import Links
from .subscribers.tokens import TokenSigner


def default_branding(settings: Settings) -> Branding:
    """The branding of the ORG_* environment settings: used until an admin saves the page."""
    return Branding(
        name=settings.org_name,
        signoff=settings.org_signoff,
        postal_address=settings.org_postal_address,
        email=settings.org_email,
        phone=settings.org_phone,
        website=settings.org_website,
        about=settings.org_about,
        social=settings.org_social,
        color=settings.brand_color,
    )


def branding(settings: Settings, session: Session | None = None) -> Branding:
    """The branding saved on the admin's settings page, else the environment's.

    Without a session, the app context's session is used when there is one
    (web requests, worker tasks, CLI commands); outside any, the environment's.
    """
    defaults = default_branding(settings)
    if session is None:
        session = _context_session()
    if session is None:
        return defaults
    return load_branding(session, defaults, settings.base_url)


def _context_session() -> Session | None:
    from flask import has_app_context

    from .extensions import db

    if not has_app_context() or db.session_factory is None:
        return None
    return db.session()


def token_signer(settings: Settings) -> TokenSigner:
    return TokenSigner(settings.secret_key, timedelta(days=settings.unsubscribe_token_max_age_days))


def confirm_token_signer(settings: Settings) -> TokenSigner:
    """Confirmation links expire sooner than the links in circulars (CONFIRM_TOKEN_MAX_AGE_DAYS)."""
    return TokenSigner(settings.secret_key, timedelta(days=settings.confirm_token_max_age_days))


def file_store(settings: Settings) -> FileStore:
    return FileStore(settings.uploads_path, settings.max_upload_size)


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """None without DKIM_SELECTOR; a selector whose key file is missing stops start-up."""
    if not settings.dkim_selectors:
        return None
    try:
        keys = load_keys(settings.dkim_keys_path, settings.dkim_selectors)
    except DkimKeyError as exc:
        raise ConfigError(f"DKIM_SELECTOR is not usable: {exc}") from None
    return DkimSigner(settings.dkim_signing_domain, keys)


def relay_messenger(settings: Settings) -> Messenger:
    """One relay without limits: straight to it. Otherwise the pool, with limits shared by all."""
    relays = settings.relays
    if len(relays) == 1 and not relays[0].limited:
        return SmtpMessenger(relays[0], timeout=settings.smtp_timeout)
    return RelayPool(
        relays,
        relay_state(settings.relay_state_url),
        cooldown=settings.relay_cooldown_seconds,
        timeout=settings.smtp_timeout,
        # A free connection slot is waited for as long as a slow relay would be.
        connect_wait=settings.smtp_timeout,
    )


def send_context(settings: Settings) -> SendContext:
    # Every message goes through this messenger, so every message is signed, just before SMTP.
    messenger = signing_messenger(relay_messenger(settings), dkim_signer(settings))
    return SendContext(
        messenger=messenger,
        files=file_store(settings),
        links=Links(settings.base_url, token_signer(settings)),
        branding=default_branding(settings),
        mail_from=settings.mail_from,
        base_url=settings.base_url,
        batch_size=settings.send_batch_size,
        max_attempts=settings.send_max_attempts,
        claim_lease=timedelta(seconds=settings.send_claim_lease_seconds),
        timezone=settings.timezone,
        pause_after_relay_errors=settings.send_pause_after_relay_errors,
    )


def bounce_intake(settings: Settings, engine: Engine) -> BounceIntake:
    """The bounce intake (receiver and poller): a session of its own per message."""
    return BounceIntake(
        lambda: Session(engine),
        settings.bounces_path,
        BouncePolicy(settings.bounce_soft_limit, settings.bounce_soft_window_days),
    )

"""Celery bound to the app: tasks run inside an app context and enqueue by name.

The web layer and the CLI enqueue with `enqueue("circulars.start_send", id)`
and never import the worker package; worker/tasks.py defines what the names do.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask, current_app

from .broker import celery_broker_options
from .config import Settings
from .extensions import db

START_SEND = "circulars.start_send"
DELIVER_BATCH = "circulars.deliver_batch"
SEND_TEST = "circulars.send_test"
SWEEP_SENDS = "circulars.sweep_sends"
START_DUE_SENDS = "circulars.start_due_sends"
RUN_IMPORT = "circulars.run_import"
SWEEP_IMPORTS = "circulars.sweep_imports"
SEND_CONFIRMATION = "circulars.send_confirmation"
SEND_WELCOME = "circulars.send_welcome"
PURGE_UNCONFIRMED = "circulars.purge_unconfirmed"
BULK_SUBSCRIBERS = "circulars.bulk_subscribers"
POLL_BOUNCES = "circulars.poll_bounces"
DIGEST_TICK = "circulars.digest_tick"
RUN_DIGEST = "circulars.run_digest"
SEND_ENDORSEMENT_CONFIRMATION = "circulars.send_endorsement_confirmation"
PURGE_UNCONFIRMED_ENDORSEMENTS = "circulars.purge_unconfirmed_endorsements"

#: The periodic jobs, each with a stable id (the key), run by `celery beat`.
SCHEDULE: dict[str, dict[str, Any]] = {
    "sweep-stalled-sends": {"task": SWEEP_SENDS, "schedule": 60.0},
    "start-scheduled-sends": {"task": START_DUE_SENDS, "schedule": 30.0},
    "sweep-stalled-imports": {"task": SWEEP_IMPORTS, "schedule": 300.0},
    "purge-unconfirmed-subscriptions": {"task": PURGE_UNCONFIRMED, "schedule": 24 * 3600.0},
    "purge-unconfirmed-endorsements": {
        "task": PURGE_UNCONFIRMED_ENDORSEMENTS,
        "schedule": 24 * 3600.0,
    },
    # Finds the lists whose weekly or monthly digest is due (or stalled) and runs them; a tick
    # queued behind a busy worker is dropped when the next one is due (nothing is lost by that).
    "digests": {"task": DIGEST_TICK, "schedule": 60.0, "options": {"expires": 60.0}},
}


def sweep_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The send sweeper at SEND_SWEEP_INTERVAL (replaces the default entry in SCHEDULE).

    A sweep still queued when the next one is due is dropped: behind a long queue of
    batches, sweeps would otherwise pile up and then all restart the same send at once.
    """
    interval = float(settings.send_sweep_interval)
    return {
        "sweep-stalled-sends": {
            "task": SWEEP_SENDS,
            "schedule": interval,
            "options": {"expires": interval},
        }
    }


def bounce_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Polling the bounce mailbox, only when BOUNCE_MAILBOX_URL is set."""
    if not settings.bounce_mailbox_url:
        return {}
    return {
        "poll-bounces": {"task": POLL_BOUNCES, "schedule": float(settings.bounce_poll_interval)}
    }


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                try:
                    return self.run(*args, **kwargs)
                finally:
                    db.session.remove()

    celery_app = Celery(app.name, task_cls=FlaskTask)
    options: dict[str, Any] = {
        **celery_broker_options(settings.broker_url),
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        # A worker outlives a broker outage of any length (the default gives up after 100 tries);
        # what the broker lost with it, the sweeper puts back.
        "broker_connection_max_retries": None,
        # Batches running when the broker goes away finish their messages (they need only the
        # database and the relay); cancelling them would cut SMTP sessions mid-message. Celery 6
        # turns this on by default.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "beat_schedule": {**SCHEDULE, **sweep_schedule(settings), **bounce_schedule(settings)},
        "beat_schedule_filename": str(settings.instance_path / "celerybeat-schedule"),
        "timezone": settings.timezone,
    }
    celery_app.config_from_object(options)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def enqueue(name: str, *args: Any, **options: Any) -> None:
    current_app.extensions["celery"].send_task(name, args=args, **options)

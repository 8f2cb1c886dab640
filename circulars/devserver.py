"""`circulars serve`: web, worker, beat and mail capture in one command, for one machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import click
from flask import Flask
from werkzeug.serving import run_simple

from .config import CAPTURE_HOST, CAPTURE_PORT, PROJECT_ROOT, Settings


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", *args]


def serve(app: Flask, *, host: str, port: int, demo: bool) -> None:
    from flask_migrate import upgrade

    from .demo import seed
    from .extensions import db
    from .models import User

    settings: Settings = app.extensions["circulars.settings"]
    with app.app_context():
        upgrade()
        if demo and db.session.query(User.id).first() is None:
            for line in seed(db.session, app.extensions["circulars.files"]):
                click.secho(line, fg="green")
        db.session.remove()

    controller: Any = None
    if settings.capture_mail:
        from .mail.capture import start_capture_server

        try:
            controller = start_capture_server(settings.outbox_path, CAPTURE_HOST, CAPTURE_PORT)
        except OSError as exc:
            raise click.ClickException(
                f"cannot start the mail capture on {CAPTURE_HOST}:{CAPTURE_PORT} ({exc.strerror}); "
                "is another `circulars serve` running?"
            ) from exc
        click.echo(f" * Mail capture on {CAPTURE_HOST}:{CAPTURE_PORT}: see the Outbox in the admin")

    env = dict(os.environ)
    env.setdefault("INSTANCE_PATH", str(settings.instance_path))
    children = [
        subprocess.Popen(
            _celery(
                "worker", "--loglevel", "INFO", "--concurrency", str(settings.worker_concurrency)
            ),
            cwd=PROJECT_ROOT,
            env=env,
        ),
        subprocess.Popen(
            _celery(
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.instance_path / "celerybeat-schedule"),
            ),
            cwd=PROJECT_ROOT,
            env=env,
        ),
    ]

    def stop(*_args: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    click.echo(f" * Admin: http://{host}:{port}/admin/")
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if controller is not None:
            controller.stop()

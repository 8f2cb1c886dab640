"""The Celery worker's entry point: `celery -A worker worker`, `celery -A worker beat`.

It only builds the app and exposes its Celery instance; the task bodies are a
few lines each in worker/tasks.py and call the domain's services.
"""

from circulars import create_app

flask_app = create_app()
app = flask_app.extensions["celery"]

# Importing the modules registers their tasks on `app`: sends, imports, subscribe mails
# (confirmation, welcome, purge) and large bulk actions on subscribers.
from . import (  # noqa: E402,F401
    bounce_tasks,
    digest_tasks,
    endorsement_tasks,
    import_tasks,
    subscribe_tasks,
    subscriber_tasks,
    tasks,
)

"""The Celery worker's entry point: `celery -A worker worker`, `celery -A worker beat`.

It only builds the app and exposes its Celery instance; the task bodies are a
few lines each in worker/tasks.py and call the domain's services.
"""

from circulars import create_app

flask_app = create_app()
app = flask_app.extensions["celery"]

from . import import_tasks, tasks  # noqa: E402,F401  (registers the tasks on `app`)
from . import subscribe_tasks  # noqa: E402,F401  (confirmation and welcome mails, purge)
from . import subscriber_tasks  # noqa: E402,F401  (large bulk actions)

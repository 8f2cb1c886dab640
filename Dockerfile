# One image for every process of the production stack: web (gunicorn), the Celery
# worker, beat, and the one-shot migration. See docker-compose.yml.
#
# The application reads templates/, static/ and migrations/ from the directory next
# to the circulars package (circulars/config.py, PROJECT_ROOT), so the source tree
# stays in /app and is installed in editable mode: the package is imported from
# /app/circulars and finds /app/templates beside it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INSTANCE_PATH=/data

WORKDIR /app

# Dependencies first, against stub packages, so that changing the code does not
# reinstall them; the real code replaces the stubs below (editable installs import
# from /app/circulars and /app/worker, whatever they hold).
COPY pyproject.toml README.md ./
RUN mkdir circulars worker \
    && touch circulars/__init__.py worker/__init__.py \
    && pip install -e . \
    && rm -r circulars worker

COPY circulars/ circulars/
COPY worker/ worker/
COPY templates/ templates/
COPY static/ static/
COPY migrations/ migrations/

# A non-root user that owns only /data (uploads, secret key file, beat schedule).
# A named volume mounted on /data starts out with this ownership.
RUN groupadd --system --gid 10001 circulars \
    && useradd --system --uid 10001 --gid circulars --home-dir /app --no-create-home circulars \
    && mkdir -p /data \
    && chown circulars:circulars /data \
    && python -m compileall -q circulars worker
USER circulars

EXPOSE 8000
CMD ["gunicorn", "circulars:create_app()", "-b", "0.0.0.0:8000", "-w", "3"]

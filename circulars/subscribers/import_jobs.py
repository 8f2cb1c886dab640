"""Imports as jobs: the upload stored on disk, run in the background, progress and report.

One code path for every way in: the admin (a Celery task runs the job), the
list page's small form (runs the job in the request), the CLI and the
benchmark (run the job in-process). `run_job` commits after every chunk, each
commit carrying the job's counts and `processed_bytes`, so the admin's progress
bar moves and SQLite's single write lock is never held for long.

A worker that dies mid-import: Celery hands the task to another worker
(`acks_late`, `reject_on_worker_lost`), which picks the job up again; what was
written stays and the re-run skips it (ON CONFLICT). While a job runs, its
report file's modification time is touched every few seconds (a heartbeat that
needs no extra column); `sweep_jobs` marks a running job whose heartbeat has
stopped for 10 minutes as failed, with a message, and queues again a job whose
task never arrived. Staff can run a failed job again from its page.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..models import ImportJob, ImportStatus, MailingList, utcnow
from ..storage import format_size, safe_filename
from .importer import ImportOptions, ImportRefused, ImportReport, RejectedRow, import_subscribers

#: A running job whose heartbeat is older than this is taken for dead.
STALL_AFTER = timedelta(minutes=10)
#: A redelivered task takes over a running job only if its heartbeat is this old.
TAKE_OVER_AFTER = timedelta(minutes=1)


class UploadRefused(ValueError):
    """The upload is too large or empty; nothing was stored."""


def imports_dir(instance_path: Path) -> Path:
    return instance_path / "imports"


def store_upload(stream: IO[bytes], instance_path: Path, max_size: int) -> tuple[Path, int]:
    """Stream an upload to `instance/imports/<random>.csv`; refuse past `max_size`, keep nothing."""
    folder = imports_dir(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{secrets.token_urlsafe(16)}.csv"
    size = 0
    try:
        with path.open("xb") as out:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > max_size:
                    raise UploadRefused(
                        f"The file is larger than the import limit of {format_size(max_size)} "
                        "(IMPORT_MAX_SIZE). Split it, or import it with the "
                        "`circulars subscribers import` command."
                    )
                out.write(chunk)
        if size == 0:
            raise UploadRefused("The file is empty.")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size


def create_job(
    session: Session,
    *,
    list_id: int,
    filename: str,
    stored_path: Path,
    size: int,
    user_id: int | None = None,
    override_reason: str | None = None,
) -> ImportJob:
    """Record a queued job for a stored file; the caller commits, then enqueues or runs it."""
    job = ImportJob(
        list_id=list_id,
        filename=safe_filename(filename, "import.csv"),
        stored_path=str(stored_path),
        status=ImportStatus.QUEUED,
        total_bytes=size,
        override_reason=(override_reason or "").strip() or None,
        created_by_id=user_id,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def _owned(path: Path, instance_path: Path) -> bool:
    """Files we stored ourselves; a CLI import reads the operator's file in place."""
    return path.resolve().parent == imports_dir(instance_path).resolve()


def _heartbeat(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def last_heartbeat(job: ImportJob) -> datetime | None:
    """When the job last showed life: its report file's mtime (touched every few
    seconds while it runs), else when it started; None if neither is known."""
    beats = [job.started_at] if job.started_at is not None else []
    if job.report_path:
        try:
            mtime = Path(job.report_path).stat().st_mtime
        except OSError:
            pass
        else:
            beats.append(datetime.fromtimestamp(mtime, tz=UTC))
    return max(beats) if beats else None


def _claim(session: Session, job_id: int) -> bool:
    """Atomically move a queued job (or a running one whose worker went silent) to running."""
    job = session.get(ImportJob, job_id)
    if job is None or job.status in (ImportStatus.DONE, ImportStatus.FAILED):
        return False
    if job.status == ImportStatus.RUNNING:
        beat = last_heartbeat(job)
        if beat is not None and utcnow() - beat < TAKE_OVER_AFTER:
            return False  # another worker is on it
        expected = ImportStatus.RUNNING
    else:
        expected = ImportStatus.QUEUED
    result = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.status == expected)
        .values(status=ImportStatus.RUNNING, started_at=utcnow(), error=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass
class JobOutcome:
    job_id: int
    status: str
    report: ImportReport | None
    error: str | None


def run_job(
    session: Session,
    job_id: int,
    instance_path: Path,
    *,
    on_reject: Callable[[RejectedRow], None] | None = None,
    writers: int = 1,
) -> JobOutcome | None:
    """Run an import job to its end; None if it is not ours to run (done, or taken).

    Commits after every chunk (data and progress together). On PostgreSQL up
    to `writers` connections write chunks at the same time (IMPORT_WRITERS);
    SQLite has one writer whatever is asked. A refused file
    (not UTF-8, no header, not CSV) ends as `failed` with the reason, having
    written nothing. An unexpected error ends as `failed` too, keeping the
    stored file so the job can be run again; the error is re-raised for the log.
    """
    if not _claim(session, job_id):
        return None
    job = session.get(ImportJob, job_id)
    assert job is not None
    mailing_list = session.get(MailingList, job.list_id) if job.list_id is not None else None
    stored = Path(job.stored_path)
    if mailing_list is None:
        return _finish(session, job_id, ImportStatus.FAILED, None, "The list no longer exists.")
    if job.report_path:  # a run before this one (taken over from a dead worker)
        Path(job.report_path).unlink(missing_ok=True)
    report_path = imports_dir(instance_path) / f"{secrets.token_urlsafe(16)}-rejected.csv"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    options = ImportOptions(
        source=f"import #{job.id}",
        actor_id=job.created_by_id,
        override_reason=job.override_reason,
    )
    last_beat = 0.0

    def progress(writer: Session, chunk: ImportReport, position: int) -> None:
        nonlocal last_beat
        _add_counts(writer, job_id, chunk, position)
        writer.commit()
        if time.monotonic() - last_beat > 5:
            last_beat = time.monotonic()
            _heartbeat(report_path)

    postgres = session.get_bind().dialect.name == "postgresql"
    more_sessions = [
        Session(bind=session.get_bind()) for _ in range(max(writers, 1) - 1 if postgres else 0)
    ]

    try:
        with (
            stored.open("rb") as source,
            report_path.open("w", newline="", encoding="utf-8") as out,
        ):
            writer = csv.writer(out)
            writer.writerow(["line", "email", "reason"])

            def reject(row: RejectedRow) -> None:
                writer.writerow([row.line, row.email, row.reason])
                if on_reject is not None:
                    on_reject(row)

            session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id)
                .values(
                    report_path=str(report_path),
                    total_bytes=os.fstat(source.fileno()).st_size,
                    # From nothing: a run taken over from a dead worker starts again.
                    processed_bytes=0,
                    rows=0,
                    imported=0,
                    subscribed=0,
                    rejected=0,
                    suppressed=0,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
            report = import_subscribers(
                session,
                source,
                mailing_list,
                options=options,
                on_reject=reject,
                on_chunk=progress,
                more_sessions=more_sessions,
            )
    except ImportRefused as exc:
        session.rollback()
        report_path.unlink(missing_ok=True)
        if _owned(stored, instance_path):
            stored.unlink(missing_ok=True)
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(report_path=None)
            .execution_options(synchronize_session=False)
        )
        return _finish(session, job_id, ImportStatus.FAILED, None, str(exc))
    except FileNotFoundError:
        session.rollback()
        return _finish(
            session,
            job_id,
            ImportStatus.FAILED,
            None,
            "The uploaded file is gone from the server (instance/imports); upload it again.",
        )
    except Exception as exc:
        session.rollback()
        _finish(
            session,
            job_id,
            ImportStatus.FAILED,
            None,
            f"The import stopped on an error ({type(exc).__name__}). What was imported "
            "stays; run it again to finish (rows already on the list are skipped).",
        )
        raise
    finally:
        for helper in more_sessions:
            helper.close()
    if _owned(stored, instance_path):
        stored.unlink(missing_ok=True)
    return _finish(session, job_id, ImportStatus.DONE, report, None)


def _add_counts(session: Session, job_id: int, chunk: ImportReport, position: int) -> None:
    """Count a chunk in, in its own transaction: the job's counts are always those of
    the chunks committed, whichever writer committed them and in whatever order."""
    session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(
            processed_bytes=func.greatest(ImportJob.processed_bytes, position)
            if session.get_bind().dialect.name == "postgresql"
            else func.max(ImportJob.processed_bytes, position),
            rows=ImportJob.rows + chunk.rows,
            imported=ImportJob.imported + chunk.added,
            subscribed=ImportJob.subscribed + chunk.subscribed,
            rejected=ImportJob.rejected + chunk.rejected_count,
            suppressed=ImportJob.suppressed + chunk.suppressed,
        )
        .execution_options(synchronize_session=False)
    )


def _finish(
    session: Session, job_id: int, status: str, report: ImportReport | None, error: str | None
) -> JobOutcome:
    values: dict[str, object] = {"status": status, "error": error, "finished_at": utcnow()}
    if report is not None:
        job = session.get(ImportJob, job_id)
        values["processed_bytes"] = job.total_bytes if job is not None else 0
    session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.expire_all()
    return JobOutcome(job_id, status, report, error)


def retry_job(session: Session, job_id: int) -> bool:
    """Queue a failed job again if its file is still there; the caller commits and enqueues."""
    job = session.get(ImportJob, job_id)
    if job is None or job.status != ImportStatus.FAILED or not Path(job.stored_path).exists():
        return False
    job.status = ImportStatus.QUEUED
    job.error = None
    job.finished_at = None
    job.processed_bytes = 0
    session.flush()
    return True


def sweep_jobs(session: Session, now: datetime | None = None) -> tuple[list[int], list[int]]:
    """Find jobs lost by a dead worker or broker; returns (ids to enqueue again, ids failed).

    A queued job older than STALL_AFTER lost its task: it is queued again (the
    caller sends the task; running a job twice is harmless, the claim lets one
    through). A running job with no heartbeat for STALL_AFTER is marked failed
    with a message, keeping its file, so staff see it and can run it again
    rather than the sweep looping on a file that kills workers.
    """
    now = now or utcnow()
    requeue = list(
        session.scalars(
            select(ImportJob.id).where(
                ImportJob.status == ImportStatus.QUEUED, ImportJob.created_at < now - STALL_AFTER
            )
        )
    )
    failed = []
    for job in session.scalars(select(ImportJob).where(ImportJob.status == ImportStatus.RUNNING)):
        beat = last_heartbeat(job)
        if beat is None or now - beat > STALL_AFTER:
            failed.append(job.id)
    for job_id in failed:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.status == ImportStatus.RUNNING)
            .values(
                status=ImportStatus.FAILED,
                finished_at=now,
                error=(
                    "The import stopped making progress (the worker may have been stopped). "
                    "What was imported stays; run it again to finish."
                ),
            )
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return requeue, failed


def delete_files(job: ImportJob, instance_path: Path) -> None:
    """Remove what a job keeps on disk (its report, and its upload if we stored it)."""
    if job.report_path:
        Path(job.report_path).unlink(missing_ok=True)
    stored = Path(job.stored_path)
    if _owned(stored, instance_path):
        stored.unlink(missing_ok=True)

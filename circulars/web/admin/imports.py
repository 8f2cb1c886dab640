"""Subscriber imports in the admin: upload, background job with progress, history, report.

Uploads for imports may be larger than attachments (IMPORT_MAX_SIZE, default
200 MB, against MAX_UPLOAD_SIZE): the two upload views raise the request's own
limit before the form is read, and are exempt from the app-wide CSRF hook
(which reads the form under the smaller app-wide limit) because their forms
check the CSRF token themselves. The upload is streamed to
instance/imports/ and imported by a Celery task; the list page's small form
runs files up to SYNC_LIMIT in the request (same job, same code) so a quick
import shows its result at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms import SelectField, TextAreaField
from wtforms.validators import Length, Optional

from ...extensions import csrf, db
from ...models import ImportJob, ImportStatus, MailingList, User
from ...storage import format_size, safe_filename
from ...subscribers.import_jobs import (
    UploadRefused,
    create_job,
    delete_files,
    retry_job,
    run_job,
    store_upload,
)
from ...tasks import RUN_IMPORT, enqueue
from ..forms import ConfirmForm, ImportForm, SubscriberForm
from ..helpers import paginate, sender_required, settings
from . import _list_or_404, _render_list, bp

#: Files up to this size sent from the list page are imported in the request.
SYNC_LIMIT = 1024 * 1024


class ImportJobForm(FlaskForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file.")])
    list_id = SelectField("Into the list", coerce=int, validate_choice=True)
    override_reason = TextAreaField(
        "Add suppressed addresses anyway, because…",
        validators=[Optional(), Length(max=1000)],
    )


def _allow_large_upload() -> int:
    """Let this request carry an import file (plus the form around it); return the limit."""
    limit = settings().import_max_size
    request.max_content_length = limit + 1024 * 1024
    return limit


def _too_large(limit: int) -> str:
    return (
        f"The file is larger than the import limit of {format_size(limit)} (IMPORT_MAX_SIZE). "
        "Split it, or import it with the `circulars subscribers import` command."
    )


def _upload_form(
    form_class: type[FlaskForm], limit: int, prepare: Callable[[Any], None] | None = None
) -> tuple[Any, bool]:
    """Build the form; (form, True) if it holds a valid upload within the limit.

    A body over the limit is refused before it is read (by its Content-Length, or
    by werkzeug while reading one sent without): the form comes back with the
    reason on the file field, not as an error page.
    """
    too_large = request.content_length is not None and request.content_length > (
        limit + 1024 * 1024
    )
    if not too_large:
        try:
            form = form_class()
            if prepare is not None:
                prepare(form)
            return form, request.method == "POST" and bool(form.validate_on_submit())
        except RequestEntityTooLarge:
            pass
    form = form_class(formdata=None)
    if prepare is not None:
        prepare(form)
    form.file.errors = [_too_large(limit)]  # type: ignore[attr-defined]
    return form, False


def _store(form: FlaskForm, limit: int, list_id: int, override: str | None) -> ImportJob | None:
    upload = form.file.data  # type: ignore[attr-defined]
    try:
        path, size = store_upload(upload.stream, settings().instance_path, limit)
    except UploadRefused as exc:
        form.file.errors = [f"Nothing was imported: {exc}"]  # type: ignore[attr-defined]
        return None
    job = create_job(
        db.session,
        list_id=list_id,
        filename=upload.filename or "import.csv",
        stored_path=path,
        size=size,
        user_id=current_user.id,
        override_reason=override,
    )
    db.session.commit()
    return job


# --- history, new, one job --------------------------------------------------------------


@bp.get("/imports")
def imports() -> Any:
    query = (
        select(ImportJob, MailingList.name, User.email)
        .outerjoin(MailingList, MailingList.id == ImportJob.list_id)
        .outerjoin(User, User.id == ImportJob.created_by_id)
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc())
    )
    page = paginate(query, per_page=25, scalars=False)
    return render_template("admin/imports/index.html", page=page)


@bp.route("/imports/new", methods=["GET", "POST"])
@csrf.exempt  # the form checks its token itself, after the larger limit is set
@sender_required
def new_import() -> Any:
    limit = _allow_large_upload()
    choices = [
        (item.id, item.name)
        for item in db.session.scalars(select(MailingList).order_by(MailingList.name))
    ]

    def prepare(form: Any) -> None:
        form.list_id.choices = choices

    form, valid = _upload_form(ImportJobForm, limit, prepare)
    if request.method == "GET" and request.args.get("list", type=int):
        form.list_id.data = request.args.get("list", type=int)
    if valid:
        job = _store(form, limit, form.list_id.data, form.override_reason.data or None)
        if job is not None:
            enqueue(RUN_IMPORT, job.id)
            flash(f"Import #{job.id} of {job.filename} queued.", "success")
            return redirect(url_for("admin.show_import", job_id=job.id))
    status = 413 if _too_large(limit) in form.file.errors else 400 if form.errors else 200
    return render_template("admin/imports/new.html", form=form, limit=limit), status


def _job_or_404(job_id: int) -> ImportJob:
    job = db.session.get(ImportJob, job_id)
    if job is None:
        abort(404)
    return job


def progress(job: ImportJob) -> dict[str, Any]:
    if job.status == ImportStatus.DONE:
        percent = 100
    elif job.total_bytes:
        percent = min(99, int(job.processed_bytes * 100 / job.total_bytes))
    else:
        percent = 0
    return {
        "id": job.id,
        "status": job.status,
        "percent": percent,
        "rows": job.rows,
        "imported": job.imported,
        "subscribed": job.subscribed,
        "rejected": job.rejected,
        "suppressed": job.suppressed,
        "error": job.error,
    }


@bp.get("/imports/<int:job_id>")
def show_import(job_id: int) -> Any:
    job = _job_or_404(job_id)
    mailing_list = db.session.get(MailingList, job.list_id) if job.list_id else None
    creator = db.session.get(User, job.created_by_id) if job.created_by_id else None
    return render_template(
        "admin/imports/show.html",
        job=job,
        mailing_list=mailing_list,
        creator=creator,
        progress=progress(job),
        has_report=bool(job.report_path and Path(job.report_path).exists()),
        can_retry=job.status == ImportStatus.FAILED and Path(job.stored_path).exists(),
        confirm_form=ConfirmForm(),
    )


@bp.get("/imports/<int:job_id>.json")
def import_progress_json(job_id: int) -> Any:
    response = jsonify(progress(_job_or_404(job_id)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/imports/<int:job_id>/rejected.csv")
def import_report(job_id: int) -> Any:
    job = _job_or_404(job_id)
    if not job.report_path or not Path(job.report_path).exists():
        abort(404)
    # The uploader's name, reduced to letters, digits, dots and hyphens for the header.
    stem = re.sub(r"[^\w.-]+", "_", safe_filename(job.filename, "import").rsplit(".", 1)[0])
    return send_file(
        job.report_path,
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"import-{job.id}-rejected-{stem}.csv",
        max_age=0,
    )


@bp.post("/imports/<int:job_id>/retry")
@sender_required
def retry_import(job_id: int) -> Any:
    _job_or_404(job_id)
    if ConfirmForm().validate_on_submit():
        if retry_job(db.session, job_id):
            db.session.commit()
            enqueue(RUN_IMPORT, job_id)
            flash(f"Import #{job_id} queued again.", "success")
        else:
            flash("This import cannot be run again (its file is gone); upload it again.", "error")
    return redirect(url_for("admin.show_import", job_id=job_id))


@bp.post("/imports/<int:job_id>/delete")
@sender_required
def delete_import_files(job_id: int) -> Any:
    """Remove the stored report (it holds addresses); the history row stays."""
    job = _job_or_404(job_id)
    if ConfirmForm().validate_on_submit() and job.status in (
        ImportStatus.DONE,
        ImportStatus.FAILED,
    ):
        delete_files(job, settings().instance_path)
        job.report_path = None
        db.session.commit()
        flash(f"The files of import #{job_id} were deleted.", "success")
    return redirect(url_for("admin.show_import", job_id=job_id))


# --- the list page's import form --------------------------------------------------------


@bp.post("/lists/<slug>/import")
@csrf.exempt  # the form checks its token itself, after the larger limit is set
@sender_required
def import_list(slug: str) -> Any:
    mailing_list = _list_or_404(slug)
    limit = _allow_large_upload()
    form, valid = _upload_form(ImportForm, limit)
    if not valid:
        if _too_large(limit) in form.file.errors:
            # The page's other forms would read the refused body: say it on the list page.
            flash(f"Nothing was imported: {_too_large(limit)}", "error")
            return redirect(url_for("admin.show_list", slug=slug), 303)
        return _render_list(mailing_list, SubscriberForm(), form, status=400)
    job = _store(form, limit, mailing_list.id, None)
    if job is None:
        return _render_list(mailing_list, SubscriberForm(), form, status=400)
    if job.total_bytes > SYNC_LIMIT:
        enqueue(RUN_IMPORT, job.id)
        flash(f"Import #{job.id} of {job.filename} runs in the background.", "success")
        return redirect(url_for("admin.show_import", job_id=job.id))
    outcome = run_job(
        db.session, job.id, settings().instance_path, writers=settings().import_writers
    )
    if outcome is None or outcome.report is None:
        error = outcome.error if outcome is not None else "the import did not run"
        form.file.errors.append(f"Nothing was imported: {error}")
        return _render_list(mailing_list, SubscriberForm(), form, status=400)
    report = outcome.report
    report.job_id = job.id
    extra = f", {report.suppressed} suppressed and left out" if report.suppressed else ""
    flash(
        f"Imported: {report.subscribed} added to the list ({report.added} new subscribers), "
        f"{report.already} already on it, {report.rejected_count} rows rejected{extra}.",
        "success" if not report.rejected else "warning",
    )
    return _render_list(mailing_list, SubscriberForm(), ImportForm(), report=report)

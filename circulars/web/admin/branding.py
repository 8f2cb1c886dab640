"""Admin page: the organisation's branding (name, logo, contacts, colours), previewed first.

Admins only. "Preview" renders a sample circular email and a sample public page
with the values as typed, and stores nothing: an uploaded logo travels back in
the form as a data: URI (checked again on every submit) until "Save".
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    StringField,
    TextAreaField,
)
from wtforms.validators import Length
from wtforms.widgets import ColorInput

from ...branding_settings import (
    LOGO_MAX_SIZE,
    MAX_SOCIAL_LINKS,
    BrandingInvalid,
    BrandingValues,
    LogoRef,
    check_values,
    current_logo,
    current_values,
    logo_path,
    make_branding,
    preview_logo_ref,
    save_branding,
    saved_settings,
)
from ...extensions import db
from ...images import CheckedImage, ImageRefused, check_image, image_from_data_uri
from ...mail.personalise import RecipientFields, fill
from ...mail.render import AttachmentInfo, render_circular
from ...storage import format_size
from ...wiring import default_branding
from ..helpers import files, settings
from . import bp
from .dns import admin_required

SAMPLE_TITLE = "Global Compact: last round of negotiations"
SAMPLE_BODY = (
    "Dear colleagues,\n\nThis is how a circular looks with these settings: the masthead, "
    "the [links](https://example.org), the featured campaign, the contact block and the "
    "footer.\n\n- The **statement** is attached.\n- Please reply by Friday.\n"
)


class SocialLinkForm(Form):
    name = StringField("Name", validators=[Length(max=50)])
    url = StringField("Address (https://…)", validators=[Length(max=500)])


class BrandingForm(FlaskForm):
    name = StringField("Organisation name", validators=[Length(max=200)])
    signoff = StringField("Sign-off of the secretariat", validators=[Length(max=200)])
    logo = FileField("Logo (PNG, JPEG, GIF or WebP)")
    pending_logo = HiddenField()
    remove_logo = BooleanField("No logo")
    phone = StringField("Phone", validators=[Length(max=50)])
    fax = StringField("Fax", validators=[Length(max=50)])
    mobile = StringField("Mobile", validators=[Length(max=50)])
    email = StringField("Email", validators=[Length(max=320)])
    website = StringField("Website (https://…)", validators=[Length(max=500)])
    postal_address = TextAreaField("Postal address", validators=[Length(max=500)])
    social = FieldList(
        FormField(SocialLinkForm), min_entries=MAX_SOCIAL_LINKS, max_entries=MAX_SOCIAL_LINKS
    )
    about = TextAreaField("About us", validators=[Length(max=2000)])
    campaign_title = StringField("Title", validators=[Length(max=200)])
    campaign_text = TextAreaField("Text", validators=[Length(max=1000)])
    campaign_url = StringField("Link (https://…)", validators=[Length(max=500)])
    primary_color = StringField(
        "Primary colour (masthead, buttons, page header)", widget=ColorInput()
    )
    accent_color = StringField("Accent colour (links, featured campaign)", widget=ColorInput())

    def values(self) -> BrandingValues:
        return BrandingValues(
            name=self.name.data or "",
            signoff=self.signoff.data or "",
            postal_address=self.postal_address.data or "",
            phone=self.phone.data or "",
            fax=self.fax.data or "",
            mobile=self.mobile.data or "",
            email=self.email.data or "",
            website=self.website.data or "",
            social=tuple(
                (entry.form.name.data or "", entry.form.url.data or "") for entry in self.social
            ),
            about=self.about.data or "",
            campaign_title=self.campaign_title.data or "",
            campaign_text=self.campaign_text.data or "",
            campaign_url=self.campaign_url.data or "",
            primary_color=self.primary_color.data or "",
            accent_color=self.accent_color.data or "",
        )

    def fill_from(self, values: BrandingValues) -> None:
        for name in (
            "name",
            "signoff",
            "postal_address",
            "phone",
            "fax",
            "mobile",
            "email",
            "website",
            "about",
            "campaign_title",
            "campaign_text",
            "campaign_url",
            "primary_color",
            "accent_color",
        ):
            getattr(self, name).data = getattr(values, name)
        for index, entry in enumerate(self.social):
            label, url = values.social[index] if index < len(values.social) else ("", "")
            entry.form.name.data, entry.form.url.data = label, url

    def add_problems(self, problems: dict[str, str]) -> None:
        """Put each problem next to its field (social-2-url is the third link's address)."""
        for key, message in problems.items():
            if key.startswith("social-"):
                _, index, part = key.split("-")
                field = getattr(self.social[int(index)].form, part)
            else:
                field = getattr(self, key)
            field.errors = [*field.errors, message]


def _uploaded_logo(form: BrandingForm) -> tuple[CheckedImage | None, str | None]:
    """The logo this submit brings (a new file, or the one previewed), or why it is refused."""
    if form.remove_logo.data:
        return None, None
    upload = form.logo.data
    try:
        if upload is not None and getattr(upload, "filename", ""):
            # One byte more than allowed is enough to know it is too large.
            return check_image(upload.stream.read(LOGO_MAX_SIZE + 1), max_bytes=LOGO_MAX_SIZE), None
        if form.pending_logo.data:
            return image_from_data_uri(form.pending_logo.data, max_bytes=LOGO_MAX_SIZE), None
    except ImageRefused as exc:
        return None, str(exc)
    return None, None


def _logo_for_preview(form: BrandingForm, image: CheckedImage | None) -> LogoRef | None:
    if image is not None:
        return preview_logo_ref(image)
    if form.remove_logo.data:
        return None
    saved = current_logo(db.session)
    if saved is None:
        return None
    # On this site, not BASE_URL: the preview frame may only load from here.
    path = logo_path(saved.sha256, saved.content_type)
    return LogoRef(path, path, saved.width, saved.height)


def _previews(values: BrandingValues, logo: LogoRef | None) -> dict[str, str]:
    """A sample circular email (HTML and text) and a sample public page, with these values."""
    branding = make_branding(values, logo)
    base_url = settings().base_url
    rendered = render_circular(
        number=27,
        title=SAMPLE_TITLE,
        body_markdown=SAMPLE_BODY,
        attachments=[AttachmentInfo("Final statement.pdf", 245_760)],
        branding=branding,
        sent_on=date.today(),
        base_url=base_url,
        web_url="#",
    )
    fields = RecipientFields(
        name="Ana Sample",
        email=current_user.email,
        list_name="Member organisations",
        unsubscribe_url="#unsubscribe",
        preferences_url="#preferences",
    ).values()
    page = render_template(
        "admin/branding/sample_page.html", org=branding, sample_title=SAMPLE_TITLE
    )
    return {
        "email_html": fill(rendered.html, fields, escape=True),
        "email_text": fill(rendered.text, fields, escape=False),
        "page_html": page,
    }


def _render(form: BrandingForm, status: int = 200, **extra: Any) -> Any:
    logo = current_logo(db.session)
    return (
        render_template(
            "admin/branding/edit.html",
            form=form,
            saved=saved_settings(db.session),
            logo=logo,
            logo_src=logo_path(logo.sha256, logo.content_type) if logo else None,
            logo_max=format_size(LOGO_MAX_SIZE),
            **extra,
        ),
        status,
    )


@bp.route("/settings/branding", methods=["GET", "POST"])
@admin_required
def branding_settings() -> Any:
    form = BrandingForm()
    if request.method == "GET":
        form.fill_from(current_values(db.session, default_branding(settings())))
        return _render(form)
    if not form.validate_on_submit():
        # A missing or stale CSRF token ends at the CSRF error page before this.
        return _render(form, 400)
    image, logo_problem = _uploaded_logo(form)
    problems = {"logo": logo_problem} if logo_problem else {}
    try:
        values = check_values(form.values())
    except BrandingInvalid as exc:
        problems.update(exc.problems)
    if image is not None:
        # A good new logo stays with the form (not stored) while other fields are fixed.
        form.pending_logo.data = image.data_uri
    elif logo_problem:
        form.pending_logo.data = ""
    if problems:
        form.add_problems(problems)
        flash("Nothing was saved: please correct the fields marked below.", "error")
        return _render(form, 400, pending=image)
    if request.form.get("action") == "save":
        save_branding(
            db.session,
            values,
            files=files(),
            user=current_user,
            logo=image,
            remove_logo=bool(form.remove_logo.data),
        )
        flash("Branding saved. Every email and page uses it from now on.", "success")
        return redirect(url_for("admin.branding_settings"))
    return _render(form, previews=_previews(values, _logo_for_preview(form, image)), pending=image)

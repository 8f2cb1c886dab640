"""Forms: validation and CSRF for every page that changes something."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp, ValidationError
from wtforms.widgets import CheckboxInput, DateTimeLocalInput, ListWidget


def single_line(_form: FlaskForm, field: StringField) -> None:
    if field.data and re.search(r"[\r\n\x00\x0b\x0c\u2028\u2029]", field.data):
        raise ValidationError("Must be a single line.")


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])
    remember = BooleanField("Keep me signed in on this device")


class CircularForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=300), single_line])
    body = TextAreaField("Body (Markdown)", validators=[Length(max=500_000)])
    lists = MultiCheckboxField("Send to lists", coerce=int, validate_choice=True)
    topic = StringField("Topic", validators=[Optional(), Length(max=100), single_line])
    in_archive = BooleanField("Show in the public archive", default=True)
    revision = HiddenField()


class ArchiveSettingsForm(FlaskForm):
    """A sent circular's place in the public archive, the one thing still editable."""

    topic = StringField("Topic", validators=[Optional(), Length(max=100), single_line])
    in_archive = BooleanField("Show in the public archive")


class AttachmentForm(FlaskForm):
    file = FileField("Add an attachment", validators=[FileRequired("Choose a file to attach.")])


class TestSendForm(FlaskForm):
    address = EmailField("Send a test to", validators=[DataRequired(), Email(), Length(max=320)])
    # A language version of the circular (checked by the view); empty: the default one.
    language = StringField("Version", validators=[Optional(), Length(max=16)])


class VersionForm(FlaskForm):
    """A circular's version in one more language (the language is fixed once added)."""

    language = StringField("Language", validators=[Optional(), Length(max=16)])
    title = StringField("Title", validators=[DataRequired(), Length(max=300), single_line])
    body = TextAreaField("Body (Markdown)", validators=[Length(max=500_000)])
    # A digest of the version as the form showed it: a save over someone else's later save
    # is refused (see admin/versions.py), not made silently.
    base = HiddenField(validators=[Optional(), Length(max=64)])


class LanguageChoiceForm(FlaskForm):
    """A circular's default language, or the version an attachment goes with (empty: all)."""

    language = StringField("Language", validators=[Optional(), Length(max=16)])


class SendForm(FlaskForm):
    lists = MultiCheckboxField("Lists", coerce=int, validate_choice=True)
    expected = IntegerField(validators=[Optional()])
    # Read with the organisation's time zone by the view (an offset is also accepted).
    scheduled_at = StringField(
        "Send later, at", widget=DateTimeLocalInput(), validators=[Optional(), Length(max=40)]
    )


class ListForm(FlaskForm):
    slug = StringField(
        "Short name (for links and the CLI)",
        validators=[
            DataRequired(),
            Length(max=64),
            Regexp(r"^[a-z0-9][a-z0-9-]*$", message="Use lower-case letters, digits and hyphens."),
        ],
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=200), single_line])
    description = TextAreaField("Description", validators=[Length(max=2000)])
    public = BooleanField("Public: people can subscribe themselves", default=True)


class SubscriberForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    name = StringField("Name", validators=[Length(max=200), single_line])
    organization = StringField("Organisation", validators=[Length(max=200), single_line])
    language = StringField(
        "Language",
        default="en",
        validators=[
            Optional(),
            Regexp(r"^[a-z]{2,3}(-[a-zA-Z0-9]{2,8})?$", message="A code such as en, fr or ar."),
        ],
    )
    # Shown only after a refusal for a suppressed address; recorded as an override.
    override_reason = StringField(
        "Add anyway — reason", validators=[Optional(), Length(max=500), single_line]
    )


class ImportForm(FlaskForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file.")])


class ConfirmForm(FlaskForm):
    """An empty form: a button that needs a CSRF token."""

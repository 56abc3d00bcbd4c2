"""The reader's forms (Flask-WTF: every one carries a CSRF token).

Validation messages are written for people: the email check quotes email-validator's
reason, a time zone must be an IANA name, and a watchlist query that cannot be read shows
the parser's message with its column (``QueryField.column`` for the template).
"""

from __future__ import annotations

from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    Field,
    Form,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, StopValidation, ValidationError

from pipeline.accounts import DEFAULT_TIMEZONE, check_query
from pipeline.core.errors import QueryError
from pipeline.core.subscribers import Frequency
from pipeline.core.tagger import THEME_IDS
from pipeline.subscriptions import check_timezone

FREQUENCIES = [
    (Frequency.INSTANT.value, "Instant alerts for major news, plus a daily digest"),
    (Frequency.DAILY.value, "A daily digest"),
    (Frequency.WEEKLY.value, "A weekly digest"),
]
HOURS = [(h, f"{h:02d}:00") for h in range(24)]
QUERY_FIELD_LIMIT = 20_000  # characters accepted from the form; the parser's own limit is 500
# A short list for the browser's suggestions; any IANA zone name is accepted.
COMMON_ZONES = (
    "Asia/Karachi",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Dubai",
    "Asia/Riyadh",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Australia/Sydney",
    "America/Toronto",
    "UTC",
)


def check_email(form: Form, field: Field) -> None:
    try:
        checked = validate_email(str(field.data or "").strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValidationError(f"This email address is not valid: {error}") from None
    field.data = checked.normalized


def check_zone(form: Form, field: Field) -> None:
    try:
        field.data = check_timezone(str(field.data or "").strip())
    except Exception:
        raise ValidationError(
            "Enter a time zone name such as Asia/Karachi, America/New_York or Europe/London."
        ) from None


def at_least_one_theme(form: Form, field: Field) -> None:
    if not field.data:
        raise ValidationError("Choose at least one theme.")


class QueryField(StringField):
    """A watchlist query: the parser decides, and its column is kept for the page."""

    column: int | None = None

    def pre_validate(self, form: Form) -> None:
        self.column = None
        text = str(self.data or "")
        if not text.strip():
            if self.flags.required:
                raise StopValidation("Enter a query, for example: IMF loan OR bailout")
            return
        try:
            check_query(text)
        except QueryError as error:
            self.column = error.column
            raise StopValidation(f"{error.message} (at column {error.column})") from None


class QueryArea(QueryField):
    """The same, written in a text area (long queries wrap)."""

    widget = TextAreaField.widget


class ThemesField(SelectMultipleField):
    def pre_validate(self, form: Form) -> None:
        known = set(THEME_IDS)
        unknown = [value for value in (self.data or []) if value not in known]
        if unknown:
            raise ValidationError("Unknown theme: " + ", ".join(unknown))


class PreferenceFields(FlaskForm):
    themes = ThemesField(
        "Themes",
        choices=[SelectChoice(t) for t in THEME_IDS],
        default=list(THEME_IDS),
        validators=[at_least_one_theme],
    )
    frequency = RadioField(
        "How often",
        choices=[SelectChoice(value, label) for value, label in FREQUENCIES],
        default=Frequency.DAILY.value,
    )
    hour = SelectField(
        "Delivery hour",
        coerce=int,
        choices=[SelectChoice(str(value), label) for value, label in HOURS],
        default=7,
    )
    timezone = StringField(
        "Time zone",
        default=DEFAULT_TIMEZONE,
        validators=[InputRequired("Enter a time zone."), Length(max=64), check_zone],
    )


class SignupForm(PreferenceFields):
    email = EmailField(
        "Email address",
        validators=[
            InputRequired("Enter your email address."),
            Length(max=320, message="That address is too long."),
            check_email,
        ],
    )
    watchlist = QueryField("First watchlist (optional)", validators=[Length(max=QUERY_FIELD_LIMIT)])


class PreferencesForm(PreferenceFields):
    pass


class WatchlistForm(FlaskForm):
    query = QueryArea(
        "Query",
        validators=[InputRequired("Enter a query."), Length(max=QUERY_FIELD_LIMIT)],
    )
    instant = BooleanField("Instant: email me as soon as something matches")
    preview = SubmitField("Preview")
    save = SubmitField("Save")


class EmailForm(FlaskForm):
    email = EmailField(
        "Email address",
        validators=[
            InputRequired("Enter your email address."),
            Length(max=320, message="That address is too long."),
            check_email,
        ],
    )


class ActionForm(FlaskForm):
    """A button: nothing but the CSRF token."""


class EraseForm(FlaskForm):
    confirm = BooleanField(
        "I understand: my subscription, watchlists and history will be deleted for good",
        validators=[InputRequired("Tick the box to confirm.")],
    )


def form_errors(form: FlaskForm) -> dict[str, Any]:
    """Field name → list of messages (for logs and tests)."""
    return {name: list(errors) for name, errors in form.errors.items()}

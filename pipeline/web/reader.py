"""The reader's pages: home and sign-up, confirmation, preferences and watchlists through a
magic link, one-click unsubscribe, resubscribe, export and erase.

Routes (blueprint "reader"; the use cases live in ``pipeline.accounts``):

- ``GET /``, ``POST /subscribe``: the sign-up form; always the same "check your inbox"
  answer (A-03). ``GET|POST /link``: "send me a link to my preferences", same rule.
- ``GET /confirm/<t>`` shows a button (link scanners only GET, M-06); ``POST`` confirms.
  ``POST /confirm/<t>/resend`` queues a new confirmation (also for an expired link).
- ``GET /manage/<t>``, and under it ``POST preferences``, ``pause``, ``resume``,
  ``watchlists`` (add), ``watchlists/<id>`` (edit), ``watchlists/<id>/delete``,
  ``export``, ``erase`` and ``resend`` (a new link when this one expired).
- ``GET|HEAD /unsubscribe/<t>``: a page with a button, no change (M-03).
  ``POST /unsubscribe/<t>``: RFC 8058 one-click, no CSRF and no cookies, 200 with a short
  body, repeatable (M-02). Unknown or tampered tokens get the 404 page (M-04).
  ``POST /unsubscribe/<t>/resubscribe``: come back.

Every other POST carries a CSRF token (Flask-WTF). Token pages get ``Referrer-Policy:
no-referrer`` and ``Cache-Control: no-store`` from ``security``, and nothing here logs a
token or an address (only subscriber ids).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    get_flashed_messages,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from pipeline import accounts
from pipeline.accounts import (
    LEFT,
    RECEIVING,
    ConfirmOutcome,
    InvalidLink,
    OpenedLink,
    ResendOutcome,
    ResubscribeOutcome,
    Visitor,
    check_preferences,
    email_hash,
    make_token,
)
from pipeline.adapters.render import safe_url
from pipeline.core.subscribers import (
    MAX_WATCHLISTS,
    Subscriber,
    SubscriberError,
    SubscriberStatus,
)
from pipeline.core.wording import counted
from pipeline.subscriptions import Backtest, backtest_query, normalise_email
from pipeline.web.context import core, themes
from pipeline.web.forms import (
    COMMON_ZONES,
    FREQUENCIES,
    HOURS,
    ActionForm,
    EmailForm,
    EraseForm,
    PreferencesForm,
    SignupForm,
    WatchlistForm,
)
from pipeline.web.security import csrf, limiter

blueprint = Blueprint("reader", __name__)

# Rate limits (Flask-Limiter syntax), counted in [web] ratelimit_storage, so they hold
# across web workers when that is shared (redis://). Only accepted requests count (form
# errors do not use up a person's allowance), but a client over the limit gets 429.
# - Per client IP: room for a person and a few retries; too little for a script that
#   would use qasid to mail-bomb strangers.
# - Per address (key: hash of the normalised address): stops many clients hammering one
#   address. The ledger adds the hard rule: one confirmation per address per 24 hours.
# One-click unsubscribe is never limited: mail providers call it from a few shared
# addresses, and a refused unsubscribe is worse than a repeated one.
SIGNUP_PER_IP = "5/hour;20/day"
SIGNUP_PER_ADDRESS = "3/hour;5/day"
LINK_PER_IP = "5/hour;20/day"
LINK_PER_ADDRESS = "3/hour;5/day"
RESEND_PER_IP = "5/hour;20/day"  # resending confirmations and links, resubscribing

ONE_CLICK_BODY = "You are unsubscribed. Nothing more will be sent to this address.\n"
CARET_WINDOW = 40  # characters of a long query shown either side of an error's column


# -- helpers ---------------------------------------------------------------------------


def _visitor(source: str = "web") -> Visitor:
    return Visitor(
        ip=request.remote_addr or "",
        user_agent=request.headers.get("User-Agent", "")[:500],
        source=source,
    )


def _address_key() -> str:
    """Rate-limit key for the address in the form (hashed: no address in the counters)."""
    raw = str(request.form.get("email", ""))[:320]
    try:
        address = normalise_email(raw)
    except SubscriberError:
        address = raw
    return "address:" + email_hash(address)


def _accepted(response: Response) -> bool:
    return response.status_code == 200


def _notice(
    title: str,
    *paragraphs: str,
    status: int = 200,
    links: tuple[tuple[str, str], ...] = (),
    button: dict[str, Any] | None = None,
) -> tuple[str, int]:
    return (
        render_template(
            "web/reader/notice.html",
            title=title,
            paragraphs=paragraphs,
            links=links,
            button=button,
            form=ActionForm() if button and button.get("csrf", True) else None,
        ),
        status,
    )


def _open(purpose: str, token: str, *, invalid_status: int = 400) -> OpenedLink:
    """The link's subscriber, or abort with the "invalid link" page (404 for unsubscribe
    links, M-04; 400 for the others, A-02)."""
    try:
        return accounts.open_link(core(), purpose, token)
    except InvalidLink:
        if invalid_status == 404:
            abort(404)
        body, status = _notice(
            "This link is not valid",
            "The link may be incomplete (some email programs break long links) or it was "
            "made for something else. Copy the whole link from the email, or ask for a new "
            "one.",
            status=invalid_status,
            links=((url_for(".link_form"), "Send me a new link"),),
        )
        abort(make_response(body, status))


def _manage_url(subscriber: Subscriber) -> str:
    return url_for(".manage", token=make_token(core(), "manage", subscriber))


def _schedule(subscriber: Subscriber) -> str:
    how = dict(FREQUENCIES).get(subscriber.frequency.value, subscriber.frequency.value)
    return f"{how}, at {subscriber.hour:02d}:00 ({subscriber.timezone})"


@blueprint.context_processor
def reader_helpers() -> dict[str, Any]:
    return {
        "caret": caret,
        "common_zones": COMMON_ZONES,
        "frequencies": FREQUENCIES,
        "hours": HOURS,
    }


def caret(text: str, column: int | None) -> tuple[str, str] | None:
    """A window of ``text`` around ``column`` (1-based) and the spaces before a caret."""
    if column is None or not text:
        return None
    start = max(0, column - 1 - CARET_WINDOW)
    snippet = text[start : column - 1 + CARET_WINDOW].replace("\n", " ").replace("\t", " ")
    prefix = "…" if start else ""
    return prefix + snippet, " " * (len(prefix) + column - 1 - start)


# -- home and sign-up --------------------------------------------------------------------


def _home(form: SignupForm, status: int = 200, detect_zone: bool = False) -> tuple[str, int]:
    return (
        render_template(
            "web/reader/home.html", form=form, themes=themes(), detect_zone=detect_zone
        ),
        status,
    )


@blueprint.get("/")
def home() -> ResponseReturnValue:
    return _home(SignupForm(formdata=None), detect_zone=True)


@blueprint.get("/subscribe")
def subscribe_get() -> ResponseReturnValue:
    return redirect(url_for(".home") + "#subscribe", 303)


@blueprint.post("/subscribe")
@limiter.limit(SIGNUP_PER_IP, deduct_when=_accepted)
@limiter.limit(SIGNUP_PER_ADDRESS, key_func=_address_key, deduct_when=_accepted)
def subscribe() -> ResponseReturnValue:
    form = SignupForm()
    if not form.validate_on_submit():
        return _home(form, status=422)
    preferences = check_preferences(
        form.themes.data or [], form.frequency.data, form.hour.data, form.timezone.data
    )
    accounts.signup(core(), form.email.data, preferences, _visitor(), form.watchlist.data or "")
    return _check_inbox()


def _check_inbox() -> tuple[str, int]:
    """The one answer to every sign-up, whatever the address's state (A-03)."""
    return _notice(
        "Check your inbox",
        "If this address can receive qasid, an email with a confirmation link is on its "
        "way. Open it within 48 hours to start your subscription; until then nothing else "
        "is sent.",
        "Nothing arrived after a few minutes? Look in the spam folder. If you unsubscribed "
        "before, open the unsubscribe link in any earlier qasid email and choose "
        "Resubscribe. We send at most one confirmation a day to an address.",
        links=((url_for(".home"), "Back to the start"),),
    )


@blueprint.get("/link")
def link_form() -> ResponseReturnValue:
    return render_template("web/reader/link.html", form=EmailForm(formdata=None))


@blueprint.post("/link")
@limiter.limit(LINK_PER_IP, deduct_when=_accepted)
@limiter.limit(LINK_PER_ADDRESS, key_func=_address_key, deduct_when=_accepted)
def link_request() -> ResponseReturnValue:
    form = EmailForm()
    if not form.validate_on_submit():
        return render_template("web/reader/link.html", form=form), 422
    accounts.request_link(core(), form.email.data)
    return _notice(
        "Check your inbox",
        "If this address is subscribed to qasid, an email with a link to your preferences "
        "is on its way. The link works for 30 days.",
        "We send at most one such email an hour; if you are not confirmed yet, you get the "
        "confirmation email again instead (at most one a day).",
        links=((url_for(".home"), "Back to the start"),),
    )


# -- confirmation ---------------------------------------------------------------------------


def _expired(purpose: str, token: str, subscriber: Subscriber) -> tuple[str, int]:
    if subscriber.status in LEFT:
        return _notice(
            "This link has expired",
            "You are unsubscribed, so nothing is sent to this address. To come back, open "
            "the unsubscribe link in any earlier qasid email and choose Resubscribe.",
            status=410,
        )
    if purpose == "confirm" and subscriber.status in RECEIVING:
        return _already_confirmed(subscriber)
    what = "confirmation link" if purpose == "confirm" else "link to your preferences"
    endpoint = ".confirm_resend" if purpose == "confirm" else ".manage_resend"
    return _notice(
        "This link has expired",
        f"For your safety a {what} works for a limited time "
        f"({'48 hours' if purpose == 'confirm' else '30 days'}). Request a new link and we "
        "will email it to the same address.",
        status=410,
        button={"action": url_for(endpoint, token=token), "label": "Send me a new link"},
    )


def _already_confirmed(subscriber: Subscriber) -> tuple[str, int]:
    return _notice(
        "Already confirmed",
        "Your subscription is confirmed already; nothing more to do.",
        links=((_manage_url(subscriber), "Manage your preferences and watchlists"),),
    )


def _closed() -> tuple[str, int]:
    return _notice(
        "This link is no longer valid",
        "This address was unsubscribed after the link was sent, or the link was used "
        "already. To subscribe again, use the form on the home page, or the Resubscribe "
        "button behind the unsubscribe link of an earlier email.",
        status=400,
        links=((url_for(".home"), "Back to the start"),),
    )


@blueprint.get("/confirm/<token>")
def confirm_page(token: str) -> ResponseReturnValue:
    link = _open("confirm", token)
    subscriber = link.subscriber
    if link.expired:
        return _expired("confirm", token, subscriber)
    if subscriber.status in RECEIVING:
        return _already_confirmed(subscriber)
    if subscriber.status is not SubscriberStatus.PENDING or accounts.link_used(core(), link):
        return _closed()
    return render_template(
        "web/reader/confirm.html", form=ActionForm(), token=token, subscriber=subscriber
    )


@blueprint.post("/confirm/<token>")
def confirm(token: str) -> ResponseReturnValue:
    link = _open("confirm", token)
    if link.expired:
        return _expired("confirm", token, link.subscriber)
    outcome = accounts.confirm(core(), link, _visitor())
    if outcome is ConfirmOutcome.ALREADY:
        return _already_confirmed(link.subscriber)
    if outcome is not ConfirmOutcome.CONFIRMED:
        return _closed()
    subscriber = link.subscriber
    return _notice(
        "You are subscribed",
        f"Thank you. Your first digest arrives at the next {subscriber.hour:02d}:00 "
        f"({subscriber.timezone}), with news from {counted(len(subscriber.themes), 'theme')}"
        + (
            f" and {counted(len(subscriber.watchlists), 'watchlist')}."
            if subscriber.watchlists
            else "."
        ),
        "Every email has a link to change your choices and a one-click unsubscribe link.",
        links=((_manage_url(subscriber), "Choose themes, schedule and watchlists"),),
    )


@blueprint.post("/confirm/<token>/resend")
@limiter.limit(RESEND_PER_IP, deduct_when=_accepted)
def confirm_resend(token: str) -> ResponseReturnValue:
    link = _open("confirm", token)
    outcome = accounts.resend_confirmation(core(), link.subscriber)
    if outcome is ResendOutcome.ALREADY:
        return _already_confirmed(link.subscriber)
    if outcome is ResendOutcome.CLOSED:
        return _closed()
    return _notice(
        "Check your inbox",
        "A new confirmation link is on its way."
        if outcome is ResendOutcome.SENT
        else "A confirmation email was sent to this address in the last 24 hours; use the "
        "newest one. We send at most one a day.",
    )


# -- preferences and watchlists ------------------------------------------------------------


def _manage_link(token: str) -> Subscriber:
    link = _open("manage", token)
    if link.expired:
        body, status = _expired("manage", token, link.subscriber)
        abort(make_response(body, status))
    return link.subscriber


def _day(when: datetime, year: bool = True) -> str:
    return f"{when.day} {when:%b %Y}" if year else f"{when.day} {when:%b}"


def _preview_view(preview: Backtest, subscriber: Subscriber) -> dict[str, Any]:
    """What the preview shows: totals, bars per week and a few examples (safe links)."""
    zone = ZoneInfo(subscriber.timezone)
    weeks = [(start.astimezone(zone), count) for start, count in preview.per_week]
    top = max((count for _, count in weeks), default=0) or 1
    width, height, gap = 64, 80, 8
    bars = [
        {
            "x": i * (width + gap),
            "y": height - round(height * count / top),
            "height": round(height * count / top),
            "width": width,
            "label": _day(start, year=False),
            "count": count,
        }
        for i, (start, count) in enumerate(weeks)
    ]
    examples = [
        {
            "title": item.title or "(untitled)",
            "url": safe_url(item.link),
            "source": item.source or item.feed,
            "date": _day(item.published.astimezone(zone)),
        }
        for item in preview.examples
    ]
    return {
        "query": preview.query,
        "days": preview.days,
        "scanned": preview.items_scanned,
        "matches": preview.matches,
        "weekly": f"{preview.weekly_average:.1f}",
        "bars": bars,
        "chart_width": max(len(bars) * (width + gap) - gap, width),
        "chart_height": height + 30,
        "chart_base": height,
        "examples": examples,
    }


def _manage_page(
    token: str,
    subscriber: Subscriber,
    *,
    status: int = 200,
    preferences: PreferencesForm | None = None,
    add: WatchlistForm | None = None,
    edits: dict[int, WatchlistForm] | None = None,
    erase: EraseForm | None = None,
    preview: Backtest | None = None,
    preview_for: str = "",
) -> tuple[str, int]:
    if preferences is None:
        preferences = PreferencesForm(
            formdata=None,
            data={
                "themes": list(subscriber.themes),
                "frequency": subscriber.frequency.value,
                "hour": subscriber.hour,
                "timezone": subscriber.timezone,
            },
        )
    edit_forms = dict(edits or {})
    for w in subscriber.watchlists:
        if w.id not in edit_forms:
            edit_forms[w.id] = WatchlistForm(
                formdata=None, prefix=f"w{w.id}", data={"query": w.query, "instant": w.instant}
            )
    return (
        render_template(
            "web/reader/manage.html",
            token=token,
            subscriber=subscriber,
            status=subscriber.status.value,
            schedule=_schedule(subscriber),
            themes=themes(),
            theme_names={t.id: t.name for t in themes()},
            preferences=preferences,
            add=add or WatchlistForm(formdata=None, prefix="new"),
            edits=edit_forms,
            erase=erase or EraseForm(formdata=None),
            action=ActionForm(),
            preview=_preview_view(preview, subscriber) if preview else None,
            preview_for=preview_for,
            max_watchlists=MAX_WATCHLISTS,
            unsubscribe_url=url_for(
                ".unsubscribe_page", token=make_token(core(), "unsubscribe", subscriber)
            ),
            confirm_token=(
                make_token(core(), "confirm", subscriber)
                if subscriber.status is SubscriberStatus.PENDING
                else ""
            ),
            messages=get_flashed_messages(),
        ),
        status,
    )


def _back(token: str, message: str, anchor: str) -> ResponseReturnValue:
    flash(message)
    return redirect(url_for(".manage", token=token) + f"#{anchor}", 303)


@blueprint.get("/manage/<token>")
def manage(token: str) -> ResponseReturnValue:
    return _manage_page(token, _manage_link(token))


@blueprint.post("/manage/<token>/preferences")
def manage_preferences(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    form = PreferencesForm()
    if not form.validate_on_submit():
        return _manage_page(token, subscriber, preferences=form, status=422)
    accounts.update_preferences(
        core(),
        subscriber,
        check_preferences(
            form.themes.data or [], form.frequency.data, form.hour.data, form.timezone.data
        ),
    )
    return _back(token, "Your preferences are saved.", "preferences")


@blueprint.post("/manage/<token>/pause")
def manage_pause(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    if accounts.pause(core(), subscriber):
        return _back(token, "Paused: nothing is sent until you resume.", "status")
    return _back(token, "Only an active subscription can be paused.", "status")


@blueprint.post("/manage/<token>/resume")
def manage_resume(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    if accounts.resume(core(), subscriber):
        return _back(token, "Welcome back: digests start again at your next hour.", "status")
    return _back(token, "Only a paused subscription can be resumed.", "status")


def _watchlist_post(
    token: str, subscriber: Subscriber, form: WatchlistForm, key: str, watchlist_id: int | None
) -> ResponseReturnValue:
    edits = {watchlist_id: form} if watchlist_id is not None else {}
    add = form if watchlist_id is None else None
    if not form.validate_on_submit():
        return _manage_page(token, subscriber, add=add, edits=edits, status=422)
    query = str(form.query.data)
    if form.preview.data:
        preview = backtest_query(core(), query)
        return _manage_page(
            token, subscriber, add=add, edits=edits, preview=preview, preview_for=key
        )
    if watchlist_id is None and len(subscriber.watchlists) >= MAX_WATCHLISTS:
        form.query.errors = [
            f"You have {MAX_WATCHLISTS} watchlists, the most allowed. Remove one to add another."
        ]
        return _manage_page(token, subscriber, add=add, edits=edits, status=422)
    try:
        accounts.save_watchlist(core(), subscriber, query, bool(form.instant.data), watchlist_id)
    except SubscriberError as error:
        form.query.errors = [str(error).split(": ", 1)[-1].capitalize() + "."]
        return _manage_page(token, subscriber, add=add, edits=edits, status=422)
    return _back(token, "Watchlist saved.", "watchlists")


@blueprint.post("/manage/<token>/watchlists")
def watchlist_add(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    return _watchlist_post(token, subscriber, WatchlistForm(prefix="new"), "new", None)


@blueprint.post("/manage/<token>/watchlists/<int:watchlist_id>")
def watchlist_edit(token: str, watchlist_id: int) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    if watchlist_id not in {w.id for w in subscriber.watchlists}:
        abort(404)
    form = WatchlistForm(prefix=f"w{watchlist_id}")
    return _watchlist_post(token, subscriber, form, str(watchlist_id), watchlist_id)


@blueprint.post("/manage/<token>/watchlists/<int:watchlist_id>/delete")
def watchlist_delete(token: str, watchlist_id: int) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    if not accounts.remove_watchlist(core(), subscriber, watchlist_id):
        abort(404)
    return _back(token, "Watchlist removed.", "watchlists")


@blueprint.post("/manage/<token>/export")
def manage_export(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    body = json.dumps(accounts.export(core(), subscriber), indent=2, ensure_ascii=False)
    response = Response(body + "\n", mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="qasid-my-data.json"'
    return response


@blueprint.post("/manage/<token>/erase")
def manage_erase(token: str) -> ResponseReturnValue:
    subscriber = _manage_link(token)
    form = EraseForm()
    if not form.validate_on_submit():
        return _manage_page(token, subscriber, erase=form, status=422)
    accounts.erase(core(), subscriber)
    return _notice(
        "Your data is deleted",
        "Your subscription, watchlists, consent records and delivery history are gone. "
        "We keep only a one-way fingerprint of the address, so nothing is ever sent to it "
        "again unless it is subscribed and confirmed afresh.",
        links=((url_for(".home"), "Back to the start"),),
    )


@blueprint.post("/manage/<token>/resend")
@limiter.limit(RESEND_PER_IP, deduct_when=_accepted)
def manage_resend(token: str) -> ResponseReturnValue:
    link = _open("manage", token)
    subscriber = link.subscriber
    if subscriber.status in LEFT:
        return _expired("manage", token, subscriber)
    if subscriber.status is SubscriberStatus.PENDING:
        accounts.resend_confirmation(core(), subscriber)
    else:
        accounts.queue_manage_link(core(), subscriber)
    return _notice(
        "Check your inbox",
        "A new link is on its way to the address this one was sent to (at most one an "
        "hour; a subscription that is not confirmed yet gets the confirmation again).",
    )


# -- leaving and coming back -------------------------------------------------------------------


@blueprint.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> ResponseReturnValue:
    """For people (and link scanners): a page with a button; GET and HEAD change nothing."""
    subscriber = _open("unsubscribe", token, invalid_status=404).subscriber
    state = "left" if subscriber.status in LEFT else "ask"
    return render_template(
        "web/reader/unsubscribe.html",
        token=token,
        state=state,
        form=ActionForm() if state == "left" else None,
    )


@blueprint.post("/unsubscribe/<token>")
@csrf.exempt
def unsubscribe(token: str) -> ResponseReturnValue:
    """RFC 8058 one-click: identified by the URL alone; no cookie, no CSRF token, no
    redirect; any body (urlencoded, multipart, empty). Repeating it is harmless."""
    subscriber = _open("unsubscribe", token, invalid_status=404).subscriber
    from_page = request.form.get("source") == "page"
    accounts.unsubscribe(core(), subscriber, _visitor("web" if from_page else "one-click"))
    if not from_page:
        return Response(ONE_CLICK_BODY, 200, mimetype="text/plain")
    return render_template(
        "web/reader/unsubscribe.html", token=token, state="done", form=ActionForm()
    )


@blueprint.post("/unsubscribe/<token>/resubscribe")
@limiter.limit(RESEND_PER_IP, deduct_when=_accepted)
def resubscribe(token: str) -> ResponseReturnValue:
    subscriber = _open("unsubscribe", token, invalid_status=404).subscriber
    outcome = accounts.resubscribe(core(), subscriber, _visitor())
    if outcome is ResubscribeOutcome.CONFIRM:
        return _notice(
            "Check your inbox",
            "To start again, confirm with the link we are emailing to this address (at most "
            "one confirmation a day).",
        )
    return _notice(
        "Welcome back" if outcome is ResubscribeOutcome.ACTIVE else "You are subscribed",
        "Your subscription is active again, with the choices you had before."
        if outcome is ResubscribeOutcome.ACTIVE
        else "This subscription is active already.",
        links=((_manage_url(subscriber), "Manage your preferences and watchlists"),),
    )


def register(flask: Flask) -> None:
    flask.register_blueprint(blueprint)

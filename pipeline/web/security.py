"""Security at the edge: CSRF on every form, headers on every response, rate limits,
friendly error pages. Views that must not use CSRF (RFC 8058 one-click unsubscribe, the
SendGrid webhook) are exempted by name where they are defined."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, current_app, redirect, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.routing import RequestRedirect

from pipeline.settings import Settings

csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])

# No inline script anywhere: pages work without JavaScript, and what little there is comes
# from /static. Feed text is escaped by Jinja2, and the CSP is the second line of defence.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)

# Headers are decided per endpoint, not per URL prefix: /editions/<id> is a public page that
# any cache may keep, /editions/<id>/<token> a reader's own page that none may.
# - A token page is a view whose URL rule takes a ``token`` argument (confirm, manage,
#   unsubscribe, a personal edition's "view in browser"): Cache-Control: no-store and
#   Referrer-Policy: no-referrer, so the link is neither stored nor sent to other sites.
# - A public page is a view marked ``@public_page(max_age)`` (the archive, editions, the Atom
#   feed, theme pages): its 200 answers get Cache-Control: public, max-age=...
# - A request that matched no view (404, 405) under a prefix where tokens live is treated as
#   a token page: its URL may still hold one.
TOKEN_PATH_PREFIXES = ("/confirm/", "/manage/", "/unsubscribe/", "/editions/")
TOKEN_ARGUMENT = "token"
PUBLIC_MAX_AGE_ATTRIBUTE = "qasid_public_max_age"

View = TypeVar("View", bound=Callable[..., object])


def public_page(max_age: int) -> Callable[[View], View]:
    """Mark a view as a public page: the same for everyone, cacheable for ``max_age`` s."""

    def mark(view: View) -> View:
        setattr(view, PUBLIC_MAX_AGE_ATTRIBUTE, max_age)
        return view

    return mark


def is_token_page() -> bool:
    """Whether the current request's URL carries (or may carry) a link token."""
    rule = request.url_rule
    if rule is None:
        return request.path.startswith(TOKEN_PATH_PREFIXES)
    return TOKEN_ARGUMENT in rule.arguments


def public_max_age() -> int | None:
    """The max-age of the current request's view when it is a public page, else None."""
    view = current_app.view_functions.get(request.endpoint or "")
    max_age = getattr(view, PUBLIC_MAX_AGE_ATTRIBUTE, None)
    return max_age if isinstance(max_age, int) else None


def install(flask: Flask, settings: Settings) -> None:
    # Token pages send no Referer (Referrer-Policy: no-referrer), so Flask-WTF's HTTPS-only
    # "Referer must match the host" check would refuse every form posted from them. The
    # CSRF token (bound to the session) and SameSite cookies still protect every form.
    flask.config["WTF_CSRF_SSL_STRICT"] = False
    csrf.init_app(flask)
    if settings.web.proxy_hops:
        # Behind a reverse proxy: trust its X-Forwarded-* so limits see the real client.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.web.proxy_hops
        flask.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            flask.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    flask.config["RATELIMIT_STORAGE_URI"] = settings.web.ratelimit_storage
    flask.config["RATELIMIT_HEADERS_ENABLED"] = True
    limiter.init_app(flask)

    @flask.after_request
    def relative_router_redirects(response: Response) -> Response:
        # The router answers a path it can match after merging doubled slashes
        # (/editions//1) with a permanent redirect to an absolute URL built from the
        # request's Host (or X-Forwarded-Host behind ProxyFix): a shared cache keeping it
        # would send everyone to whatever host one request named. Only the path and query
        # are kept, so the redirect stays on this site. The app's own redirects are
        # relative already (url_for) and take no target from the request.
        moved = request.routing_exception
        if isinstance(moved, RequestRedirect):
            target = urlsplit(moved.new_url)
            path = "/" + target.path.lstrip("/\\")  # never "//host" or "/\\host"
            location = urlunsplit(("", "", path, target.query, ""))
            response.headers["Location"] = location
            response.set_data(redirect(location, moved.code).get_data())  # its link too
        return response

    @flask.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        # Token links must not leak through the Referer header to outside sites.
        if is_token_page():
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
            return response
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        max_age = public_max_age()
        if (
            max_age is not None
            and response.status_code == 200
            and "Cache-Control" not in response.headers
            and "Set-Cookie" not in response.headers
        ):
            response.headers["Cache-Control"] = f"public, max-age={max_age}"
        return response

    @flask.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> tuple[str, int]:
        return (
            render_template(
                "web/error.html",
                title="This form has expired",
                message="For your safety the form could not be accepted. Go back, reload "
                "the page and try again.",
            ),
            400,
        )

    @flask.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return (
            render_template(
                "web/error.html",
                title="Not found",
                message="There is nothing at this address. The link may be mistyped or no "
                "longer valid.",
            ),
            404,
        )

    @flask.errorhandler(405)
    def wrong_method(error: Exception) -> tuple[str, int]:
        return (
            render_template(
                "web/error.html",
                title="Not here",
                message="This address only answers a form. Go back and use the button.",
            ),
            405,
        )

    @flask.errorhandler(413)
    def too_large(error: Exception) -> tuple[str, int]:
        return render_template(
            "web/error.html",
            title="Too large",
            message="That request is larger than this site accepts.",
        ), 413

    @flask.errorhandler(429)
    def too_many(error: Exception) -> tuple[str, int]:
        return (
            render_template(
                "web/error.html",
                title="Slow down",
                message="Too many requests from your connection. Please wait a while and "
                "try again.",
            ),
            429,
        )

    @flask.errorhandler(500)
    def failed(error: Exception) -> tuple[str, int]:
        return (
            render_template(
                "web/error.html",
                title="Something went wrong",
                message="The page could not be shown. The error has been logged; please try "
                "again later.",
            ),
            500,
        )

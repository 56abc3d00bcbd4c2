"""Security at the edge: CSRF on every form, headers on every response, rate limits,
friendly error pages. Views that must not use CSRF (RFC 8058 one-click unsubscribe, the
SendGrid webhook) are exempted by name where they are defined."""

from __future__ import annotations

from flask import Flask, Response, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

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

TOKEN_PATH_PREFIXES = ("/confirm/", "/manage/", "/unsubscribe/", "/editions/")


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
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        # Token links must not leak through the Referer header to outside sites.
        if request.path.startswith(TOKEN_PATH_PREFIXES):
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
        else:
            response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
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

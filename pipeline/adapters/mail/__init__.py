"""Mail backends: the outbox folder, an SMTP server, SendGrid. ``build_mailer`` picks one.

Every backend implements ``pipeline.core.mail.Mailer``: one ``SendResult`` per email, never
an exception for a problem with an email or a provider. See each module for how failures
are classified.
"""

from __future__ import annotations

import ipaddress

from pipeline.core.errors import ConfigError
from pipeline.core.mail import Mailer, parse_address
from pipeline.settings import Settings

__all__ = ["build_mailer"]


def build_mailer(settings: Settings) -> Mailer:
    """The mailer ``[mail] backend`` names, checked: a missing or contradictory setting
    raises ConfigError naming the key (e.g. sendgrid without an API key)."""
    mail = settings.mail
    if mail.backend == "outbox":
        from pipeline.adapters.mail.outbox import OutboxMailer

        if not mail.outbox_dir.strip():
            raise ConfigError("mail.outbox_dir", "is empty; name a folder for the .eml files")
        return OutboxMailer(settings.path(mail.outbox_dir))
    if mail.backend == "smtp":
        from pipeline.adapters.mail.smtp import SmtpMailer

        smtp = settings.smtp
        if smtp.tls and smtp.starttls:
            raise ConfigError("smtp.tls", "and smtp.starttls exclude each other; choose one")
        if smtp.password and not smtp.username:
            raise ConfigError("smtp.username", "is empty but smtp.password is set")
        if smtp.username and not smtp.password:
            raise ConfigError("smtp.password", "is empty but smtp.username is set")
        if smtp.username and not (smtp.tls or smtp.starttls) and not _is_loopback(smtp.host):
            raise ConfigError(
                "smtp.starttls",
                f"is off, so the password would cross the network to {smtp.host} in clear "
                "text; set smtp.starttls or smtp.tls",
            )
        if smtp.ca_file and not settings.path(smtp.ca_file).is_file():
            raise ConfigError("smtp.ca_file", "file not found", value=smtp.ca_file)
        helo = smtp.helo_name or parse_address(mail.from_address).domain
        return SmtpMailer(smtp, helo_name=helo)
    if mail.backend == "sendgrid":
        from pipeline.adapters.mail.sendgrid_api import SendGridMailer

        if not settings.sendgrid.api_key.strip():
            raise ConfigError(
                "sendgrid.api_key",
                'is required when mail.backend = "sendgrid" (set SENDGRID_API_KEY)',
            )
        return SendGridMailer(settings.sendgrid)
    raise ConfigError("mail.backend", "must be outbox, smtp or sendgrid", value=mail.backend)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

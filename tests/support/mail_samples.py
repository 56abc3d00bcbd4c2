"""Sample ``OutgoingEmail``s for mail tests: a digest-like email with personal parts carried
as substitution tags, so several of them can share one SendGrid request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.core.mail import OutgoingEmail

SENT_AT = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)  # 07:00 in Karachi
UNSUBSCRIBE_BASE = "https://qasid.example.org/u/"

TEXT = """Pakistan and the United States: your daily digest

Top stories
- IMF board approves the next tranche (Dawn)
.
.a line that starts with a dot, and the line above is a lone dot

Hello %%name%%, you get this because you subscribed to economy and sanctions.
Unsubscribe: %%unsubscribe%%
Qasid, 1 Example Road, Lahore
"""

HTML = """<!doctype html><html><body>
<h1>Pakistan and the United States: your daily digest</h1>
<p>Hello %%name%%, you get this because you subscribed to economy and sanctions.</p>
<p><a href="%%unsubscribe%%">Unsubscribe</a> &middot; Qasid, 1 Example Road, Lahore</p>
</body></html>
"""


def make_email(
    delivery_id: str = "101", to: str = "reader@example.com", **overrides: Any
) -> OutgoingEmail:
    token = f"tok{delivery_id}"
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "to": to,
        "from_addr": "Qasid digest <digest@qasid.example.org>",
        "reply_to": "editors@qasid.example.org",
        "subject": "Economy and sanctions: Pakistan digest, 3 March 2026",
        "text": TEXT,
        "html": HTML,
        "date": SENT_AT,
        "list_unsubscribe_url": UNSUBSCRIBE_BASE + token,
        "list_unsubscribe_mailto": f"mailto:unsubscribe+{token}@qasid.example.org",
        "list_id": "Qasid daily digest <daily.qasid.example.org>",
        "custom_args": {"edition_id": "2026-03-03-daily"},
        "substitutions": {
            "%%name%%": f"reader {delivery_id}",
            "%%unsubscribe%%": UNSUBSCRIBE_BASE + token,
        },
    }
    fields.update(overrides)
    return OutgoingEmail(**fields)

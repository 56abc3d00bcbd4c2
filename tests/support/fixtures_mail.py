"""Mail fixtures (loaded from tests/conftest.py).

- ``smtp_server``: a running aiosmtpd ``SmtpServer`` on 127.0.0.1 (ephemeral port).
- ``sendgrid_stub``: a running ``SendGridStub`` on 127.0.0.1 that validates every mail/send
  request against SendGrid's published description; skipped with a reason when
  ``shared/testdata/sendgrid-oai`` is not beside the repository.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sendgrid_stub import MAIL_SPEC, SendGridStub, spec_available
from tests.support.smtp_server import SmtpServer


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def sendgrid_stub() -> Iterator[SendGridStub]:
    if not spec_available():
        pytest.skip(f"SendGrid's API description is not at {MAIL_SPEC} (shared/testdata)")
    with SendGridStub() as stub:
        yield stub

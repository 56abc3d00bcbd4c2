"""The WSGI entry for production servers: ``gunicorn pipeline.web.wsgi:app``."""

from __future__ import annotations

import logging

from pipeline.web import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()

"""WSGI entry point for gunicorn: `workorder.wsgi:application`."""

import os
import sys

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")

try:
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
except ImproperlyConfigured as exc:
    # One actionable line instead of a traceback. Exit status 4 is gunicorn's "app load error":
    # the arbiter stops instead of respawning the worker forever.
    print(f"workorder: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(4) from None

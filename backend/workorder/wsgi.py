"""WSGI entry point for gunicorn: `workorder.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")
application = get_wsgi_application()

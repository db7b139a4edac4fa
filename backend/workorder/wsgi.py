"""WSGI entry point for gunicorn: `workorder.wsgi:application`."""

import os

from workorder.core.env import configuration_errors

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")

# gunicorn_conf.py already checked the settings in the master, so this only fires if a worker sees
# another environment. Exit status 4 is gunicorn's "app load error": the arbiter stops instead of
# respawning the worker forever (with 2 it would respawn it).
with configuration_errors(status=4):
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()

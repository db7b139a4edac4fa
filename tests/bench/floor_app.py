"""The framework floor for the capacity benchmark: a trivial Django JSON view, nothing else.

Both the settings module (DJANGO_SETTINGS_MODULE=floor_app) and the WSGI app (floor_app:application),
served by a second gunicorn with the package's config (python:workorder.gunicorn_conf) on its own
unix socket, and reached through the bench's nginx at /floor/ (a location that only the benchmark's
nginx config has: this is never a production endpoint). No database, no middleware, no auth: it
measures what Django + gunicorn + nginx alone cost on this machine.
"""

from django.http import JsonResponse
from django.urls import path

SECRET_KEY = "floor-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None


def floor(request):
    return JsonResponse({"hello": "world"})


urlpatterns = [path("floor/", floor)]

_wsgi = None


def application(environ, start_response):
    global _wsgi
    if _wsgi is None:
        from django.core.wsgi import get_wsgi_application

        _wsgi = get_wsgi_application()
    return _wsgi(environ, start_response)

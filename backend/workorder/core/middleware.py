"""Operational endpoints answered before host validation and the HTTPS redirect; the admin's session
middlewares, skipped for the API (below).

/health/, /ready/ and /metrics/ are probed on gunicorn's loopback port by systemd, the test harness and
Prometheus with whatever Host header they have (e.g. 127.0.0.1:8001) and over plain HTTP. They produce
no URLs, so host-header validation protects nothing there; /metrics/ has its own access control.
Place this near the top of MIDDLEWARE, before the edge middlewares (core/edge.py). Its answers
never reach RequestMetricsMiddleware (core/request_metrics.py, last), so probes and scrapes are not
counted as API requests.
"""

from __future__ import annotations

from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions


class OperationalEndpointsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        from .health import health, ready
        from .metrics import metrics

        self.views = {"/health/": health, "/ready/": ready, "/metrics/": metrics, "/metrics": metrics}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)


# --- the admin's session machinery, not run for the API ------------------------------------------
# The API authenticates with tokens and takes no cookies (REST_FRAMEWORK's authentication classes),
# so a session, Django's request.user and the message storage are never read under /api/. Each of
# these three middlewares passes API requests straight on; the admin and every other path get them
# unchanged. One API path keeps them: logout also ends an admin session sent along with the token.
API_PREFIX = "/api/"
API_PATHS_WITH_SESSION = frozenset({"/api/auth/logout/"})


def serves_api(path_info: str) -> bool:
    return path_info.startswith(API_PREFIX) and path_info not in API_PATHS_WITH_SESSION


def _not_for_the_api(middleware: type) -> type:
    """`middleware` (a MiddlewareMixin without process_view) for every request but the API's. A
    subclass, so Django's checks that the admin needs it are still satisfied."""

    def __call__(self, request):
        if serves_api(request.path_info):
            return self.get_response(request)
        return middleware.__call__(self, request)

    return type(middleware.__name__, (middleware,), {"__call__": __call__, "__module__": __name__,
                                                     "__doc__": f"{middleware.__module__}.{middleware.__name__}, "
                                                                "not run for the API (serves_api)."})


SessionMiddleware = _not_for_the_api(sessions.SessionMiddleware)
AuthenticationMiddleware = _not_for_the_api(auth.AuthenticationMiddleware)
MessageMiddleware = _not_for_the_api(messages.MessageMiddleware)

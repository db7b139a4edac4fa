"""Operational endpoints outside /api/: /health/, /ready/, /metrics/.

OperationalEndpointsMiddleware answers these paths first (GET/HEAD); the routes here give them names
and answer other methods with 405.
"""

from django.urls import path
from django.views.decorators.http import require_safe

from .health import health, ready
from .metrics import metrics

urlpatterns: list = [
    path("health/", require_safe(health), name="health"),
    path("ready/", require_safe(ready), name="ready"),
    path("metrics/", require_safe(metrics), name="metrics"),
]

"""Operational endpoints outside /api/: /health/, /ready/, /metrics/."""

urlpatterns: list = []

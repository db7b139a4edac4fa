"""Dashboard statistics: organisation-wide aggregates (counts only, no rows) for every signed-in user,
cached for settings.STATISTICS_CACHE_SECONDS (WORKORDER_STATISTICS_CACHE_SECONDS, default 5)."""

import time

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from workorder.core.api import ApiViewMixin

from . import queries
from .serializers import CollaborationSerializer, DepartmentWorkloadSerializer, TaskSummarySerializer


def cached(name: str, compute):
    """Serve `compute()` from the cache for STATISTICS_CACHE_SECONDS.

    Stale-while-revalidate: the value is kept 10x longer than it is fresh; when it is stale, one
    process (the one that wins cache.add on a short lock key) recomputes it while the others keep
    answering with the stale value, so a cache expiry never lets every worker run the aggregates at once.
    """
    seconds = int(getattr(settings, "STATISTICS_CACHE_SECONDS", 5))
    if seconds <= 0:
        return compute()
    key = f"statistics:{name}"
    entry = cache.get(key)
    now = time.time()
    if entry is not None and entry["expires"] > now:
        return entry["value"]
    if entry is not None and not cache.add(f"{key}:refresh", 1, timeout=30):
        return entry["value"]  # someone else is refreshing it
    value = compute()
    cache.set(key, {"value": value, "expires": time.time() + seconds}, seconds * 10)
    cache.delete(f"{key}:refresh")
    return value


class TaskSummaryView(ApiViewMixin, APIView):
    @extend_schema(responses={200: TaskSummarySerializer}, summary="Tasks by status, overall and per department")
    def get(self, request):
        return Response(cached("task_summary", queries.task_summary))


class DepartmentWorkloadView(ApiViewMixin, APIView):
    @extend_schema(responses={200: DepartmentWorkloadSerializer},
                   summary="Per department: pending, in progress, completed today, operators, tasks per operator")
    def get(self, request):
        return Response(cached("department_workload", queries.department_workload))


class CollaborationView(ApiViewMixin, APIView):
    @extend_schema(responses={200: CollaborationSerializer},
                   summary="Hand-offs between departments and work orders waiting on each department")
    def get(self, request):
        return Response(cached("collaboration", queries.collaboration))

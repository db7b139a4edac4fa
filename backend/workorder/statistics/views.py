"""Dashboard statistics: organisation-wide aggregates (counts only, no rows) for every signed-in user,
cached for settings.STATISTICS_CACHE_SECONDS (WORKORDER_STATISTICS_CACHE_SECONDS, default 5)."""

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from workorder.core.api import ApiViewMixin

from . import queries
from .serializers import CollaborationSerializer, DepartmentWorkloadSerializer, TaskSummarySerializer


def cached(name: str, compute):
    seconds = int(getattr(settings, "STATISTICS_CACHE_SECONDS", 5))
    if seconds <= 0:
        return compute()
    key = f"statistics:{name}"
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, seconds)
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

"""Read-only catalog endpoints (managed in /admin/).

The catalog changes only when someone edits it in the admin, and every signed-in user sees all of
it: a list answer is kept in each server process for CATALOG_CACHE_SECONDS
(WORKORDER_CATALOG_CACHE_SECONDS, default 10; 0 disables it), so an edit shows in the lists within
that time. Writes never read these answers (a work order's product is checked in the database).
"""

import time

from django.conf import settings
from django.db.models import Prefetch
from rest_framework import viewsets
from rest_framework.response import Response

from workorder.core.api import ApiViewMixin

from .filters import ProcessFilter
from .models import Customer, Department, Process, Product, RoutingStep
from .serializers import CustomerSerializer, DepartmentSerializer, ProcessSerializer, ProductSerializer


class CatalogListMixin:
    """list() answers kept per process for CATALOG_CACHE_SECONDS (see the module docstring), by view,
    scheme and host (the page links are absolute) and query string; only 200s are kept."""

    MAX_ENTRIES = 512
    MAX_QUERY_CHARS = 512  # longer query strings are answered without keeping the answer
    _answers: dict[tuple, tuple[float, object]] = {}

    def list(self, request, *args, **kwargs):
        seconds = int(getattr(settings, "CATALOG_CACHE_SECONDS", 10))
        query = request.META.get("QUERY_STRING", "")
        if seconds <= 0 or len(query) > self.MAX_QUERY_CHARS:
            return super().list(request, *args, **kwargs)
        key = (type(self), request.scheme, request.get_host(), query)
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            return Response(kept[1])
        response = super().list(request, *args, **kwargs)
        if response.status_code == 200:
            if len(self._answers) >= self.MAX_ENTRIES:
                self._answers.clear()
            self._answers[key] = (now + seconds, response.data)
        return response


class DepartmentViewSet(ApiViewMixin, CatalogListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Department.objects.order_by("name", "id")
    serializer_class = DepartmentSerializer
    filterset_class = None
    ordering_fields = ["id", "name"]


class ProcessViewSet(ApiViewMixin, CatalogListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Process.objects.select_related("department").order_by("name", "id")
    serializer_class = ProcessSerializer
    filterset_class = ProcessFilter
    ordering_fields = ["id", "name"]


class CustomerViewSet(ApiViewMixin, CatalogListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Customer.objects.order_by("name", "id")
    serializer_class = CustomerSerializer
    filterset_class = None
    ordering_fields = ["id", "name"]


class ProductViewSet(ApiViewMixin, CatalogListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Product.objects.order_by("name", "id").prefetch_related(
        Prefetch("routing_steps", queryset=RoutingStep.objects.select_related("process").order_by("sequence"))
    )
    serializer_class = ProductSerializer
    filterset_class = None
    ordering_fields = ["id", "name", "sku"]

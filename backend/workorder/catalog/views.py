"""Read-only catalog endpoints (managed in /admin/); their lists are reference lists
(core/api.py ReferenceListMixin: kept per process for a few seconds)."""

from django.db.models import Prefetch
from rest_framework import viewsets

from workorder.core.api import ApiViewMixin, ReferenceListMixin

from .filters import ProcessFilter
from .models import Customer, Department, Process, Product, RoutingStep
from .serializers import CustomerSerializer, DepartmentSerializer, ProcessSerializer, ProductSerializer


class DepartmentViewSet(ApiViewMixin, ReferenceListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Department.objects.order_by("name", "id")
    serializer_class = DepartmentSerializer
    filterset_class = None
    ordering_fields = ["id", "name"]


class ProcessViewSet(ApiViewMixin, ReferenceListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Process.objects.select_related("department").order_by("name", "id")
    serializer_class = ProcessSerializer
    filterset_class = ProcessFilter
    ordering_fields = ["id", "name"]


class CustomerViewSet(ApiViewMixin, ReferenceListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Customer.objects.order_by("name", "id")
    serializer_class = CustomerSerializer
    filterset_class = None
    ordering_fields = ["id", "name"]


class ProductViewSet(ApiViewMixin, ReferenceListMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Product.objects.order_by("name", "id").prefetch_related(
        Prefetch("routing_steps", queryset=RoutingStep.objects.select_related("process").order_by("sequence"))
    )
    serializer_class = ProductSerializer
    filterset_class = None
    ordering_fields = ["id", "name", "sku"]

"""Thin views: visibility (404 for what you may not see) + serializers; rules live in services.py."""

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from workorder.core.api import ApiViewMixin
from workorder.core.pagination import ListPageMixin
from workorder.core.statements import parse_pk, rows_by_pk

from . import services
from .filters import TaskFilter, WorkOrderFilter
from .models import ProgressReport, Task, WorkOrder
from .serializers import (
    AssignSerializer,
    ProgressReportSerializer,
    ProgressSerializer,
    RejectSerializer,
    TaskDetailSerializer,
    TaskSerializer,
    WorkOrderDetailSerializer,
    WorkOrderSerializer,
    WorkOrderUpdateSerializer,
    WorkOrderWriteSerializer,
)


def visible_pk(view, model) -> int:
    """The URL's primary key if the request's user may see that row, else 404: a write's visibility
    check, read with one statement per visibility scope (core/statements.py) rather than a queryset
    built and compiled per request. The write's service then reads and locks the row itself."""
    pk = parse_pk(model, view.kwargs[view.lookup_url_kwarg or view.lookup_field])
    user = view.request.user
    if pk is None or not rows_by_pk(
        (f"{model._meta.label_lower}-visible", model.objects.visibility_scope(user)),
        lambda key: model.objects.visible_to(user).filter(pk=key).values_list("pk"), pk,
    ):
        raise NotFound()
    return pk


@extend_schema_view(
    list=extend_schema(summary="Tasks visible to you (paginated, filterable, orderable)"),
    retrieve=extend_schema(summary="One task with its progress reports"),
)
class TaskViewSet(ApiViewMixin, ListPageMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Task.objects.none()  # for the schema; get_queryset() applies visibility
    filterset_class = TaskFilter
    ordering_fields = ["id", "created_at", "updated_at", "sequence"]
    ordering = ["id"]

    def get_queryset(self):
        if self.action == "list":  # filtered, counted, then read as rows (page_rows, ListPageMixin)
            return Task.objects.visible_to(self.request.user).order_by("id")
        return TaskSerializer.list_queryset(Task.objects.visible_to(self.request.user)).order_by("id")

    def get_serializer_class(self):
        return TaskDetailSerializer if self.action == "retrieve" else TaskSerializer

    def page_rows(self, queryset):
        """A list page: rows, not instances (core/serializers.py; core/pagination.py counts `queryset`)."""
        return TaskSerializer.list_rows(queryset)

    def count_scope(self, request):
        return Task.objects.visibility_scope(request.user)

    def retrieve(self, request, *args, **kwargs):
        """The task as its list row (if visible: 404 otherwise) with its progress reports, newest first;
        both read with statements compiled once per visibility scope (core/statements.py)."""
        pk = parse_pk(Task, kwargs[self.lookup_url_kwarg or self.lookup_field])
        user = request.user
        rows = [] if pk is None else rows_by_pk(
            ("task-detail", Task.objects.visibility_scope(user)),
            lambda key: TaskSerializer.list_rows(Task.objects.visible_to(user).filter(pk=key)), pk)
        if not rows:
            raise NotFound()
        reports = rows_by_pk(
            ("task-detail-reports",),
            lambda key: ProgressReportSerializer.list_rows(
                ProgressReport.objects.filter(task_id=key).order_by("-created_at", "-id")), pk)
        context = self.get_serializer_context()
        return Response({**TaskSerializer(rows[0], context=context).data,
                         "progress_reports": ProgressReportSerializer(reports, many=True, context=context).data})

    def _respond(self, task_id: int):
        """A write's answer: the task it changed, as a list row (the caller checked visible_pk())."""
        rows = rows_by_pk(("task-row",), lambda key: TaskSerializer.list_rows(Task.objects.filter(pk=key)), task_id)
        if not rows:
            raise NotFound()
        return Response(TaskSerializer(rows[0], context=self.get_serializer_context()).data)

    @extend_schema(request=AssignSerializer, responses={200: TaskSerializer},
                   summary="Assign to an operator of the task's department (supervisors, admins)")
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None):
        task_pk = visible_pk(self, Task)
        body = AssignSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.assign_task(request.user, task_pk, body.validated_data["operator_id"])
        return self._respond(task_pk)

    @extend_schema(request=None, responses={200: TaskSerializer},
                   summary="Claim a pending, unassigned task of your department (operators)")
    @action(detail=True, methods=["post"])
    def claim(self, request, pk=None):
        task_pk = visible_pk(self, Task)
        services.claim_task(request.user, task_pk)
        return self._respond(task_pk)

    @extend_schema(request=ProgressSerializer, responses={200: TaskSerializer},
                   summary="Report units just produced (the assigned operator)")
    @action(detail=True, methods=["post"])
    def update_progress(self, request, pk=None):
        task_pk = visible_pk(self, Task)
        body = ProgressSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.update_progress(request.user, task_pk, body.validated_data["quantity"])
        return self._respond(task_pk)

    @extend_schema(request=None, responses={200: TaskSerializer},
                   summary="Complete an in-progress task (its operator, a department supervisor, an admin)")
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        task_pk = visible_pk(self, Task)
        services.complete_task(request.user, task_pk)
        return self._respond(task_pk)


@extend_schema_view(
    list=extend_schema(summary="Work orders visible to you (paginated, filterable, orderable)"),
    retrieve=extend_schema(summary="One work order with its tasks"),
    create=extend_schema(request=WorkOrderWriteSerializer, responses={201: WorkOrderSerializer},
                         summary="Create a work order (makers, supervisors, admins)"),
    partial_update=extend_schema(request=WorkOrderUpdateSerializer, responses={200: WorkOrderSerializer},
                                 summary="Change a work order (plan fields only while pending approval)"),
)
class WorkOrderViewSet(ApiViewMixin, ListPageMixin, viewsets.ReadOnlyModelViewSet):
    queryset = WorkOrder.objects.none()  # for the schema; get_queryset() applies visibility
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_class = WorkOrderFilter
    ordering_fields = ["id", "created_at", "delivery_date", "number"]
    ordering = ["-id"]

    def get_queryset(self):
        if self.action == "list":  # filtered, counted, then read as rows (page_rows, ListPageMixin)
            return WorkOrder.objects.visible_to(self.request.user).order_by("-id")
        queryset = WorkOrderSerializer.list_queryset(WorkOrder.objects.visible_to(self.request.user)).order_by("-id")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(
                Prefetch("tasks", queryset=Task.objects.select_related("process").order_by("sequence"))
            )
        return queryset

    def get_serializer_class(self):
        if self.action == "retrieve":
            return WorkOrderDetailSerializer
        if self.action == "create":
            return WorkOrderWriteSerializer
        if self.action == "partial_update":
            return WorkOrderUpdateSerializer
        return WorkOrderSerializer

    def count_scope(self, request):
        return WorkOrder.objects.visibility_scope(request.user)

    def page_rows(self, queryset):
        """A list page: rows, not instances (core/serializers.py; core/pagination.py counts `queryset`)."""
        return WorkOrderSerializer.list_rows(queryset)

    def _respond(self, work_order_id: int, status_code=status.HTTP_200_OK):
        """A write's answer: the work order it made or changed, as a list row."""
        rows = rows_by_pk(("workorder-row",),
                          lambda key: WorkOrderSerializer.list_rows(WorkOrder.objects.filter(pk=key)), work_order_id)
        if not rows:
            raise NotFound()
        return Response(WorkOrderSerializer(rows[0], context=self.get_serializer_context()).data, status=status_code)

    def create(self, request, *args, **kwargs):
        services.require_can_create_work_order(request.user)
        body = WorkOrderWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        work_order = services.create_work_order(request.user, **body.validated_data)
        return self._respond(work_order.pk, status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        work_order_pk = visible_pk(self, WorkOrder)
        body = WorkOrderUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.update_work_order(request.user, work_order_pk, dict(body.validated_data))
        return self._respond(work_order_pk)

    @extend_schema(request=None, responses={200: WorkOrderSerializer},
                   summary="Approve a pending work order: creates its tasks from the product routing")
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        work_order_pk = visible_pk(self, WorkOrder)
        services.approve_work_order(request.user, work_order_pk)
        return self._respond(work_order_pk)

    @extend_schema(request=RejectSerializer, responses={200: WorkOrderSerializer},
                   summary="Reject a pending work order (a reason is required)")
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        work_order_pk = visible_pk(self, WorkOrder)
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.reject_work_order(request.user, work_order_pk, body.validated_data["reason"])
        return self._respond(work_order_pk)

from rest_framework import serializers

from workorder.catalog.models import Customer, Product
from workorder.core.serializers import FastModelSerializer

from .models import Priority, ProgressReport, Task, WorkOrder

MAX_QUANTITY = 1_000_000


class ProgressReportSerializer(FastModelSerializer):
    operator_username = serializers.CharField(source="operator.username", read_only=True)

    class Meta:
        model = ProgressReport
        fields = ["id", "operator", "operator_username", "quantity", "created_at"]


class TaskSerializer(FastModelSerializer):
    """A task in lists and action answers; these fields are also what the task list query loads."""

    work_order_number = serializers.CharField(source="work_order.number", read_only=True)
    work_order_priority = serializers.ChoiceField(source="work_order.priority", choices=Priority.choices,
                                                  read_only=True)
    delivery_date = serializers.DateField(source="work_order.delivery_date", read_only=True)
    process_name = serializers.CharField(source="process.name", read_only=True)
    assigned_department_name = serializers.CharField(source="assigned_department.name", read_only=True)
    assigned_operator_username = serializers.CharField(source="assigned_operator.username", read_only=True,
                                                       allow_null=True, default=None)

    class Meta:
        model = Task
        fields = ["id", "work_order", "work_order_number", "work_order_priority", "delivery_date", "process",
                  "process_name", "sequence", "assigned_department", "assigned_department_name",
                  "assigned_operator", "assigned_operator_username", "status", "planned_quantity",
                  "completed_quantity", "started_at", "completed_at", "created_at", "updated_at"]
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    progress_reports = ProgressReportSerializer(many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = TaskSerializer.Meta.fields + ["progress_reports"]
        read_only_fields = fields


class AssignSerializer(serializers.Serializer):
    operator_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class ProgressSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY,
                                        help_text="Units just produced (> 0).")


class WorkOrderSerializer(FastModelSerializer):
    """A work order in lists and action answers; these fields are also what the list query loads."""

    customer_name = serializers.CharField(source="customer.name", read_only=True)
    product_name = serializers.CharField(source="product.name", read_only=True)
    created_by_username = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = WorkOrder
        fields = ["id", "number", "customer", "customer_name", "product", "product_name", "production_quantity",
                  "delivery_date", "priority", "approval_status", "status", "rejection_reason", "created_by",
                  "created_by_username", "approved_by", "approved_at", "completed_at", "created_at",
                  "updated_at"]
        read_only_fields = fields


class WorkOrderTaskSerializer(serializers.ModelSerializer):
    process_name = serializers.CharField(source="process.name", read_only=True)

    class Meta:
        model = Task
        fields = ["id", "sequence", "process", "process_name", "assigned_department", "assigned_operator",
                  "status", "planned_quantity", "completed_quantity"]
        read_only_fields = fields


class WorkOrderDetailSerializer(WorkOrderSerializer):
    tasks = WorkOrderTaskSerializer(many=True, read_only=True)

    class Meta(WorkOrderSerializer.Meta):
        fields = WorkOrderSerializer.Meta.fields + ["tasks"]
        read_only_fields = fields


class WorkOrderWriteSerializer(serializers.Serializer):
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all())
    product = serializers.PrimaryKeyRelatedField(queryset=Product.objects.all())
    production_quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    delivery_date = serializers.DateField()
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)


class WorkOrderUpdateSerializer(WorkOrderWriteSerializer):
    """PATCH: any subset of the create fields."""

    def __init__(self, *args, **kwargs):
        kwargs["partial"] = True
        super().__init__(*args, **kwargs)


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the work order is rejected (required).")

from rest_framework import serializers

from workorder.catalog.models import Customer, Product

from .models import Priority, ProgressReport, Task, WorkOrder

MAX_QUANTITY = 1_000_000


class ProgressReportSerializer(serializers.ModelSerializer):
    operator_username = serializers.CharField(source="operator.username", read_only=True)

    class Meta:
        model = ProgressReport
        fields = ["id", "operator", "operator_username", "quantity", "created_at"]


# Output formatting for TaskSerializer.to_representation: what ModelSerializer generates for the
# model's DateTimeFields and what delivery_date declares (API_SETTINGS formats, current time zone).
_DATETIME = serializers.DateTimeField(read_only=True)
_DATE = serializers.DateField(read_only=True)


class TaskSerializer(serializers.ModelSerializer):
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

    def to_representation(self, instance):
        """The declared fields above, built directly: the task list's hottest path (DRF's generic loop
        of get_attribute/to_representation over 19 fields x 20 rows was ~1.8 ms per page,
        tests/bench/profile_endpoints.py). Same keys, order and values; dates and datetimes go through
        the same field classes as the declared/generated ones (time zone, ISO format, "Z"), without
        building this serializer's fields on every request. The schema still comes from the fields."""
        work_order = instance.work_order
        operator = instance.assigned_operator

        def moment(name):
            value = getattr(instance, name)
            return _DATETIME.to_representation(value) if value is not None else None

        delivery_date = work_order.delivery_date
        return {
            "id": instance.pk,
            "work_order": instance.work_order_id,
            "work_order_number": str(work_order.number),
            "work_order_priority": str(work_order.priority),
            "delivery_date": _DATE.to_representation(delivery_date) if delivery_date is not None else None,
            "process": instance.process_id,
            "process_name": str(instance.process.name),
            "sequence": int(instance.sequence),
            "assigned_department": instance.assigned_department_id,
            "assigned_department_name": str(instance.assigned_department.name),
            "assigned_operator": instance.assigned_operator_id,
            "assigned_operator_username": str(operator.username) if operator is not None else None,
            "status": str(instance.status),
            "planned_quantity": int(instance.planned_quantity),
            "completed_quantity": int(instance.completed_quantity),
            "started_at": moment("started_at"),
            "completed_at": moment("completed_at"),
            "created_at": moment("created_at"),
            "updated_at": moment("updated_at"),
        }


class TaskDetailSerializer(TaskSerializer):
    progress_reports = ProgressReportSerializer(many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = TaskSerializer.Meta.fields + ["progress_reports"]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["progress_reports"] = self.fields["progress_reports"].to_representation(instance.progress_reports.all())
        return data


class AssignSerializer(serializers.Serializer):
    operator_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class ProgressSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY,
                                        help_text="Units just produced (> 0).")


class WorkOrderSerializer(serializers.ModelSerializer):
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

    def to_representation(self, instance):
        """The declared fields, built directly (as TaskSerializer.to_representation): same keys, order
        and values, without building this serializer's fields on every request."""
        def moment(value):
            return _DATETIME.to_representation(value) if value is not None else None

        return {
            "id": instance.pk,
            "number": str(instance.number),
            "customer": instance.customer_id,
            "customer_name": str(instance.customer.name),
            "product": instance.product_id,
            "product_name": str(instance.product.name),
            "production_quantity": int(instance.production_quantity),
            "delivery_date": _DATE.to_representation(instance.delivery_date)
            if instance.delivery_date is not None else None,
            "priority": str(instance.priority),
            "approval_status": str(instance.approval_status),
            "status": str(instance.status),
            "rejection_reason": str(instance.rejection_reason),
            "created_by": instance.created_by_id,
            "created_by_username": str(instance.created_by.username),
            "approved_by": instance.approved_by_id,
            "approved_at": moment(instance.approved_at),
            "completed_at": moment(instance.completed_at),
            "created_at": moment(instance.created_at),
            "updated_at": moment(instance.updated_at),
        }


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

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["tasks"] = self.fields["tasks"].to_representation(instance.tasks.all())
        return data


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

import django_filters

from workorder.core.api import IdFilter

from .models import ApprovalStatus, Priority, Task, TaskStatus, WorkOrder, WorkOrderStatus


class TaskFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    assigned_department = IdFilter(field_name="assigned_department_id")
    assigned_operator = IdFilter(field_name="assigned_operator_id")
    work_order = IdFilter(field_name="work_order_id")
    process = IdFilter(field_name="process_id")

    class Meta:
        model = Task
        fields = ["status", "assigned_department", "assigned_operator", "work_order", "process"]


class WorkOrderFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=WorkOrderStatus.choices)
    approval_status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    priority = django_filters.ChoiceFilter(choices=Priority.choices)
    customer = IdFilter(field_name="customer_id")
    product = IdFilter(field_name="product_id")

    class Meta:
        model = WorkOrder
        fields = ["status", "approval_status", "priority", "customer", "product"]

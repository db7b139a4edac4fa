"""/admin/ for production. State is never edited in a form: status, approval, quantities done,
assignee and timestamps are read-only, and the admin actions (approve, reject, assign, complete) go
through services.py like the API, so tasks get created, rules checked and notifications sent."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm

from workorder.accounts.models import Role, User
from workorder.core.errors import DomainError

from . import services
from .models import NumberSequence, ProgressReport, Task, WorkOrder
from .states import APPROVAL, WORK_ORDER

TASK_STATE_FIELDS = ("status", "assigned_operator", "completed_quantity", "started_at", "completed_at",
                     "created_at", "updated_at")
WORK_ORDER_STATE_FIELDS = ("number", "approval_status", "status", "rejection_reason", "approved_by", "approved_at",
                           "completed_at", "created_at", "updated_at")


def run_action(model_admin, request, queryset, action, done: str) -> None:
    """`action(obj)` for every selected object, each in its own transaction (services.py); one message
    for what succeeded and one per refusal."""
    succeeded = 0
    for obj in queryset.order_by("pk"):
        try:
            action(obj)
        except DomainError as exc:
            model_admin.message_user(request, f"{obj}: {exc}", messages.ERROR)
        else:
            succeeded += 1
    if succeeded:
        model_admin.message_user(request, f"{done}: {succeeded}.", messages.SUCCESS)


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    fields = ("sequence", "process", "assigned_department", "assigned_operator", "status",
              "planned_quantity", "completed_quantity")
    readonly_fields = ("assigned_operator", "status", "completed_quantity")
    show_change_link = True


class WorkOrderActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=2000, help_text="Rejection reason (reject only).")


@admin.register(WorkOrder)
class WorkOrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "product", "production_quantity", "priority", "approval_status",
                    "status", "delivery_date", "created_by")
    list_filter = ("status", "approval_status", "priority")
    search_fields = ("number",)
    list_select_related = ("customer", "product", "created_by")
    raw_id_fields = ("customer", "product", "created_by")
    inlines = [TaskInline]
    show_full_result_count = False
    action_form = WorkOrderActionForm
    actions = ["approve_selected", "reject_selected"]

    def get_readonly_fields(self, request, obj=None):
        """The state always; once created the maker; the plan once decided, the schedule once finished
        (the same rules as services.update_work_order)."""
        fields = list(WORK_ORDER_STATE_FIELDS)
        if obj is not None:
            fields.append("created_by")
            if not APPROVAL.allows("change_plan", obj.approval_status):
                fields += sorted(services.PLAN_FIELDS)
            if not WORK_ORDER.allows("change", obj.status):
                fields += ["delivery_date", "priority"]
        return fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.number = services.next_work_order_number()
        super().save_model(request, obj, form, change)

    @admin.action(description="Approve the selected work orders (creates their tasks)")
    def approve_selected(self, request, queryset):
        run_action(self, request, queryset, lambda wo: services.approve_work_order(request.user, wo.pk),
                   "Approved")

    @admin.action(description="Reject the selected work orders (with the reason above)")
    def reject_selected(self, request, queryset):
        reason = request.POST.get("reason", "")
        run_action(self, request, queryset, lambda wo: services.reject_work_order(request.user, wo.pk, reason),
                   "Rejected")


class OperatorChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return f"{obj.username} ({obj.department})"


class TaskActionForm(ActionForm):
    operator = OperatorChoiceField(
        queryset=User.objects.filter(role=Role.OPERATOR, is_active=True).select_related("department")
        .order_by("department__name", "username"),
        required=False, help_text="Operator to assign (assign only).")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "work_order", "sequence", "process", "assigned_department", "assigned_operator",
                    "status", "planned_quantity", "completed_quantity")
    list_filter = ("status", "assigned_department")
    list_select_related = ("work_order", "process", "assigned_department", "assigned_operator")
    raw_id_fields = ("work_order",)
    readonly_fields = TASK_STATE_FIELDS
    show_full_result_count = False
    action_form = TaskActionForm
    actions = ["assign_selected", "complete_selected"]

    @admin.action(description="Assign the selected tasks to the operator above")
    def assign_selected(self, request, queryset):
        operator_id = request.POST.get("operator", "")
        operator = int(operator_id) if operator_id.isdigit() else None
        run_action(self, request, queryset, lambda task: services.assign_task(request.user, task.pk, operator),
                   "Assigned")

    @admin.action(description="Complete the selected in-progress tasks")
    def complete_selected(self, request, queryset):
        run_action(self, request, queryset, lambda task: services.complete_task(request.user, task.pk), "Completed")


@admin.register(ProgressReport)
class ProgressReportAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "operator", "quantity", "created_at")
    list_select_related = ("task", "operator")
    raw_id_fields = ("task", "operator")
    show_full_result_count = False


@admin.register(NumberSequence)
class NumberSequenceAdmin(admin.ModelAdmin):
    list_display = ("name", "last_value")

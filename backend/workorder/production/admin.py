from django.contrib import admin

from .models import NumberSequence, ProgressReport, Task, WorkOrder


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    fields = ("sequence", "process", "assigned_department", "assigned_operator", "status",
              "planned_quantity", "completed_quantity")
    raw_id_fields = ("assigned_operator",)
    show_change_link = True


@admin.register(WorkOrder)
class WorkOrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "product", "production_quantity", "priority", "approval_status",
                    "status", "delivery_date", "created_by")
    list_filter = ("status", "approval_status", "priority")
    search_fields = ("number",)
    list_select_related = ("customer", "product", "created_by")
    raw_id_fields = ("customer", "product", "created_by", "approved_by")
    readonly_fields = ("number", "created_at", "updated_at")
    inlines = [TaskInline]
    show_full_result_count = False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "work_order", "sequence", "process", "assigned_department", "assigned_operator",
                    "status", "planned_quantity", "completed_quantity")
    list_filter = ("status", "assigned_department")
    list_select_related = ("work_order", "process", "assigned_department", "assigned_operator")
    raw_id_fields = ("work_order", "assigned_operator")
    show_full_result_count = False


@admin.register(ProgressReport)
class ProgressReportAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "operator", "quantity", "created_at")
    list_select_related = ("task", "operator")
    raw_id_fields = ("task", "operator")
    show_full_result_count = False


@admin.register(NumberSequence)
class NumberSequenceAdmin(admin.ModelAdmin):
    list_display = ("name", "last_value")

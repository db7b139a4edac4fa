from rest_framework import serializers

from workorder.production.states import TaskStatus

# One count per task status, in the order of TaskStatus (a new status appears here by itself).
StatusCountsSerializer = type("StatusCountsSerializer", (serializers.Serializer,), {
    "__module__": __name__,
    "__doc__": "Tasks per status.",
    **{status: serializers.IntegerField() for status in TaskStatus.values},
})


class DepartmentStatusCountsSerializer(StatusCountsSerializer):
    department = serializers.IntegerField()
    department_name = serializers.CharField()
    total = serializers.IntegerField()


class TaskSummarySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = StatusCountsSerializer()
    departments = DepartmentStatusCountsSerializer(many=True)


class DepartmentWorkloadRowSerializer(serializers.Serializer):
    department = serializers.IntegerField()
    department_name = serializers.CharField()
    pending = serializers.IntegerField()
    in_progress = serializers.IntegerField()
    completed_today = serializers.IntegerField()
    operators = serializers.IntegerField(help_text="Active operators in the department.")
    tasks_per_operator = serializers.FloatField(allow_null=True,
                                                help_text="(pending + in_progress) / operators; null without operators.")


class DepartmentWorkloadSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Start of today (server time zone) for completed_today.")
    departments = DepartmentWorkloadRowSerializer(many=True)


class HandoffSerializer(serializers.Serializer):
    from_department = serializers.IntegerField()
    from_department_name = serializers.CharField()
    to_department = serializers.IntegerField()
    to_department_name = serializers.CharField()
    handoffs = serializers.IntegerField(help_text="Consecutive step pairs of work orders between the two departments.")
    completed = serializers.IntegerField(help_text="Of those, handed over (the earlier step is completed).")
    pending = serializers.IntegerField(help_text="Of those, still in the earlier department.")


class WaitingSerializer(serializers.Serializer):
    department = serializers.IntegerField()
    department_name = serializers.CharField()
    work_orders = serializers.IntegerField(help_text="Open work orders whose current step is in this department.")


class CollaborationSerializer(serializers.Serializer):
    handoffs = HandoffSerializer(many=True)
    waiting = WaitingSerializer(many=True)

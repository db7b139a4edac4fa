from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Notification, NotificationKind


class NotificationObjectSerializer(serializers.Serializer):
    type = serializers.CharField(help_text='Model label, e.g. "production.task" or "production.workorder".')
    id = serializers.IntegerField(allow_null=True)


class NotificationSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=NotificationKind.choices, read_only=True)
    object = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "message", "object", "read_at", "created_at"]
        read_only_fields = fields

    @extend_schema_field(NotificationObjectSerializer(allow_null=True))
    def get_object(self, obj):
        """The object it is about, or null (same as the WebSocket message)."""
        if not obj.object_type:
            return None
        return {"type": obj.object_type, "id": obj.object_id}


class ReadAllResultSerializer(serializers.Serializer):
    updated = serializers.IntegerField(help_text="How many notifications were marked read.")

"""Your own notifications, newest first; mark one or all read."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from workorder.core.api import ApiViewMixin

from . import services
from .filters import NotificationFilter
from .models import Notification
from .serializers import NotificationSerializer, ReadAllResultSerializer


@extend_schema_view(
    list=extend_schema(summary="Your notifications, newest first (`unread=true` for unread only)"),
    retrieve=extend_schema(summary="One of your notifications"),
)
class NotificationViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Notification.objects.none()  # for the schema; get_queryset() shows your own only
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    ordering_fields: list = []  # always newest first

    def get_queryset(self):
        if not self.request.user.is_authenticated:
            return Notification.objects.none()
        return Notification.objects.filter(recipient=self.request.user).order_by("-created_at", "-id")

    @extend_schema(request=None, responses={200: NotificationSerializer}, summary="Mark one notification read")
    @action(detail=True, methods=["post"])
    def read(self, request, pk=None):
        notification = self.get_object()
        notification = services.mark_read(request.user, notification.pk)
        if notification is None:
            raise NotFound()
        return Response(NotificationSerializer(notification).data)

    @extend_schema(request=None, responses={200: ReadAllResultSerializer}, summary="Mark all your notifications read")
    @action(detail=False, methods=["post"])
    def read_all(self, request):
        return Response({"updated": services.mark_all_read(request.user)})

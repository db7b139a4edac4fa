from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "workorder.notifications"
    label = "notifications"

    def ready(self) -> None:
        from workorder.core.metrics import register_gauges

        from . import handlers  # noqa: F401 - connects the listeners of production's events
        from .metrics import unread_gauge, websocket_gauge

        register_gauges(unread_gauge)
        register_gauges(websocket_gauge)

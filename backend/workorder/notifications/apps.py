from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "workorder.notifications"
    label = "notifications"

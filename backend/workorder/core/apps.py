from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "workorder.core"
    label = "core"

from django.apps import AppConfig


class ProductionConfig(AppConfig):
    name = "workorder.production"
    label = "production"

    def ready(self) -> None:
        from workorder.core.metrics import register_gauges

        from .metrics import gauges

        register_gauges(gauges)

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "workorder.core"
    label = "core"

    def ready(self) -> None:
        from . import prepared
        from .idempotency import gauges
        from .metrics import register_gauges

        register_gauges(gauges)
        prepared.connect()  # PostgreSQL: repeated SELECTs as prepared statements

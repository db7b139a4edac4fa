from django.apps import AppConfig


class ProductionConfig(AppConfig):
    name = "workorder.production"
    label = "production"

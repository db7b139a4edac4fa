from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "workorder.catalog"
    label = "catalog"

from django.apps import AppConfig


class StatisticsConfig(AppConfig):
    name = "workorder.statistics"
    label = "statistics"

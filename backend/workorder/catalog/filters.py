import django_filters

from workorder.core.api import IdFilter

from .models import Process


class ProcessFilter(django_filters.FilterSet):
    department = IdFilter(field_name="department_id")

    class Meta:
        model = Process
        fields = ["department"]

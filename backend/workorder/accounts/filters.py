import django_filters

from workorder.core.api import IdFilter

from .models import Role, User


class UserFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=Role.choices)
    department = IdFilter(field_name="department_id")

    class Meta:
        model = User
        fields = ["role", "department"]

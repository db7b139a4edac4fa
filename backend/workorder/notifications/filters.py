import django_filters

from workorder.core.api import StrictBooleanFilter

from .models import Notification


class NotificationFilter(django_filters.FilterSet):
    unread = StrictBooleanFilter(method="filter_unread", help_text="true: only unread; false: only read.")

    class Meta:
        model = Notification
        fields = ["unread"]

    def filter_unread(self, queryset, name, value):
        return queryset.filter(read_at__isnull=StrictBooleanFilter.as_bool(value))

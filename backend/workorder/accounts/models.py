"""Users with a shop-floor role. Admins are staff/superusers (role may be empty)."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    MAKER = "maker", "Maker (sales)"
    SUPERVISOR = "supervisor", "Supervisor"
    OPERATOR = "operator", "Operator"


class User(AbstractUser):
    role = models.CharField(max_length=20, choices=Role.choices, blank=True, db_index=True)
    department = models.ForeignKey(
        "catalog.Department", null=True, blank=True, on_delete=models.PROTECT, related_name="members"
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        indexes = [models.Index(fields=["department", "role"], name="accounts_user_dept_role_idx")]

    @property
    def is_admin(self) -> bool:
        """The one definition of an admin: staff or superuser, whatever the role. Admins see and may do
        everything the API offers."""
        return bool(self.is_staff or self.is_superuser)

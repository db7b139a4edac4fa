"""Users with a shop-floor role, and their API tokens.

Admins are superusers or users with the admin role (`User.is_admin`); `is_staff` alone only opens the
Django admin, within the permissions it is given there.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    MAKER = "maker", "Maker (sales)"
    SUPERVISOR = "supervisor", "Supervisor"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


class User(AbstractUser):
    role = models.CharField(max_length=20, choices=Role.choices, blank=True, db_index=True)
    department = models.ForeignKey(
        "catalog.Department", null=True, blank=True, on_delete=models.PROTECT, related_name="members"
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        indexes = [models.Index(fields=["department", "role"], name="accounts_user_dept_role_idx")]

    def check_password(self, raw_password):
        # A successful check may rehash the password with the preferred hasher (PBKDF2 -> Argon2id) and
        # save it: that is not a password change and must not revoke the user's tokens (receivers.py).
        self._rehashing_password = True
        try:
            return super().check_password(raw_password)
        finally:
            self._rehashing_password = False

    async def acheck_password(self, raw_password):
        self._rehashing_password = True
        try:
            return await super().acheck_password(raw_password)
        finally:
            self._rehashing_password = False

    @property
    def is_admin(self) -> bool:
        """The one definition of an admin: a superuser, or a user with the admin role. Admins see and may
        do everything the API offers. `is_staff` alone is not enough: it only opens the Django admin."""
        return bool(self.is_superuser or self.role == Role.ADMIN)


class AuthToken(models.Model):
    """An API token: one per login (device). Only the SHA-256 digest of the key is stored; the key itself
    is shown once, in the login response. Valid until idle for WORKORDER_TOKEN_IDLE_SECONDS or older
    than WORKORDER_TOKEN_MAX_AGE_SECONDS (expires_at), whichever comes first (workorder/accounts/tokens.py)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="auth_tokens")
    digest = models.CharField(max_length=64, unique=True)
    key_prefix = models.CharField(max_length=8, help_text="The first characters of the key, to tell tokens apart.")
    device = models.CharField(max_length=200, blank=True, help_text="The client's User-Agent at login.")
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField()
    expires_at = models.DateTimeField(help_text="Absolute end of validity, however often the token is used.")

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="accounts_token_user_idx")]

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user_id})"

    def deadline(self):
        """When this token stops being valid: idle timeout after the last use, capped by expires_at."""
        idle_timeout = timedelta(seconds=settings.WORKORDER_TOKEN_IDLE_SECONDS)
        return min(self.last_used_at + idle_timeout, self.expires_at)

"""Role helpers for DRF views. Object visibility lives in production/visibility.py."""

from rest_framework.permissions import BasePermission


def is_admin(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_staff or user.is_superuser))


class IsAdmin(BasePermission):
    message = "Only admins may do this."

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user)


class HasRole(BasePermission):
    """Allow admins and users whose role is in `view.allowed_roles` (used per action)."""

    message = "Your role may not do this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return is_admin(user) or user.role in getattr(view, "allowed_roles", ())

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import AuthToken, User
from .tokens import revoke_token


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "role", "department", "is_staff", "is_active")
    list_filter = ("role", "department", "is_staff", "is_active")
    list_select_related = ("department",)
    fieldsets = BaseUserAdmin.fieldsets + (("Shop floor", {"fields": ("role", "department")}),)
    add_fieldsets = BaseUserAdmin.add_fieldsets + (("Shop floor", {"fields": ("role", "department")}),)


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    """API tokens: seen, never created or edited here (keys are shown only once, at login); deleting one
    revokes it (and tells the WebSocket code through tokens_revoked)."""

    list_display = ("key_prefix", "user", "device", "created_at", "last_used_at", "expires_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "key_prefix")
    readonly_fields = ("user", "key_prefix", "device", "created_at", "last_used_at", "expires_at")
    exclude = ("digest",)
    ordering = ("-created_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        revoke_token(obj)

    def delete_queryset(self, request, queryset):
        for token in queryset:
            revoke_token(token)

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "role", "department", "is_staff", "is_active")
    list_filter = ("role", "department", "is_staff", "is_active")
    list_select_related = ("department",)
    fieldsets = BaseUserAdmin.fieldsets + (("Shop floor", {"fields": ("role", "department")}),)
    add_fieldsets = BaseUserAdmin.add_fieldsets + (("Shop floor", {"fields": ("role", "department")}),)

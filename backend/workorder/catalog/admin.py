from django.contrib import admin

from .models import Customer, Department, Process, Product, RoutingStep


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ("name", "code")
    search_fields = ("name", "code")


@admin.register(Process)
class ProcessAdmin(admin.ModelAdmin):
    list_display = ("name", "department")
    list_filter = ("department",)
    search_fields = ("name",)
    list_select_related = ("department",)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "phone")
    search_fields = ("name", "email")


class RoutingStepInline(admin.TabularInline):
    model = RoutingStep
    extra = 0
    ordering = ("sequence",)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name")
    search_fields = ("sku", "name")
    inlines = [RoutingStepInline]


@admin.register(RoutingStep)
class RoutingStepAdmin(admin.ModelAdmin):
    list_display = ("product", "sequence", "process")
    list_select_related = ("product", "process")
    raw_id_fields = ("product",)

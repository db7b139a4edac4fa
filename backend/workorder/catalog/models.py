"""The catalog: departments, the processes they perform, customers, products and their routings."""

from django.db import models


class Department(models.Model):
    """A shop-floor department (cutting, welding, ...). Supervisors and operators belong to one."""

    name = models.CharField(max_length=100, unique=True)
    code = models.SlugField(max_length=30, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Process(models.Model):
    """A production step performed by exactly one department (e.g. "Laser cutting" by Cutting)."""

    name = models.CharField(max_length=100, unique=True)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="processes")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "processes"

    def __str__(self) -> str:
        return self.name


class Customer(models.Model):
    name = models.CharField(max_length=200, unique=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    """Something we manufacture; its ordered routing says which processes make it."""

    sku = models.CharField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name", "id"], name="catalog_product_name_idx")]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class RoutingStep(models.Model):
    """One step of a product's routing: which process, in which order (ascending `sequence`)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="routing_steps")
    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="routing_steps")
    sequence = models.PositiveIntegerField()

    class Meta:
        ordering = ["product", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["product", "sequence"], name="catalog_routingstep_unique_sequence"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}#{self.sequence}: {self.process_id}"

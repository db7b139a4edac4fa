from rest_framework import serializers

from .models import Customer, Department, Process, Product, RoutingStep


class DepartmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ["id", "name", "code"]


class ProcessSerializer(serializers.ModelSerializer):
    department_name = serializers.CharField(source="department.name", read_only=True)

    class Meta:
        model = Process
        fields = ["id", "name", "department", "department_name", "description"]


class CustomerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "name", "email", "phone"]


class RoutingStepSerializer(serializers.ModelSerializer):
    process_name = serializers.CharField(source="process.name", read_only=True)
    department = serializers.IntegerField(source="process.department_id", read_only=True)

    class Meta:
        model = RoutingStep
        fields = ["sequence", "process", "process_name", "department"]


class ProductSerializer(serializers.ModelSerializer):
    routing = RoutingStepSerializer(source="routing_steps", many=True, read_only=True)

    class Meta:
        model = Product
        fields = ["id", "sku", "name", "description", "routing"]

from rest_framework import serializers

from .models import Role, User


class UserSerializer(serializers.ModelSerializer):
    department_name = serializers.CharField(source="department.name", read_only=True, allow_null=True,
                                            default=None)
    full_name = serializers.SerializerMethodField()
    # Admins may have no role and users no email: "" must be valid in the schema too.
    role = serializers.ChoiceField(choices=Role.choices, allow_blank=True, read_only=True)
    email = serializers.CharField(read_only=True)
    is_admin = serializers.BooleanField(read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "full_name", "first_name", "last_name", "email", "role", "department",
                  "department_name", "is_staff", "is_admin"]
        read_only_fields = fields

    def get_full_name(self, obj) -> str:
        return obj.get_full_name()


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=512, trim_whitespace=False, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text='Send as "Authorization: Token <token>".')
    expires_at = serializers.DateTimeField(
        help_text="The token's absolute end; it ends earlier after the idle timeout (docs/api.md).")
    user = UserSerializer()

"""Token login/logout, the current user, and the user directory (for assignment)."""

from django.contrib.auth import authenticate
from django.contrib.auth import logout as end_session
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from workorder.core.api import ApiViewMixin, ReferenceListMixin

from .filters import UserFilter
from .models import User
from .serializers import LoginSerializer, TokenSerializer, UserSerializer
from .tokens import issue_token, revoke_token


class LoginView(ApiViewMixin, APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []  # no session/CSRF: credentials in, token out
    idempotent_writes = False  # a retried login simply issues another token

    @extend_schema(request=LoginSerializer, auth=[], summary="Exchange username and password for an API token",
                   responses={200: TokenSerializer,
                              429: OpenApiResponse(description="Too many failed logins (Retry-After)"),
                              503: OpenApiResponse(description="Too many logins at once (Retry-After)")})
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, username=serializer.validated_data["username"],
                            password=serializer.validated_data["password"])
        if user is None:
            raise ValidationError({"non_field_errors": ["Unable to log in with the given username and password."]})
        token, key = issue_token(user, device=request.META.get("HTTP_USER_AGENT", ""))
        return Response({"token": key, "expires_at": token.expires_at, "user": UserSerializer(user).data})


class LogoutView(ApiViewMixin, APIView):
    idempotent_writes = False  # revoking twice is harmless; the second finds no token (401)

    @extend_schema(request=None, responses={204: None}, summary="Revoke the API token of this request")
    def post(self, request):
        """Revokes this request's token only (other devices stay logged in), and ends a Django (admin)
        session if the request carries one."""
        if request.auth is not None:
            revoke_token(request.auth)
        if getattr(request._request, "session", None) is not None and request._request.session.session_key:
            end_session(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(ApiViewMixin, APIView):
    @extend_schema(responses={200: UserSerializer}, summary="The authenticated user")
    def get(self, request):
        return Response(UserSerializer(request.user).data)


class UserViewSet(ApiViewMixin, ReferenceListMixin, viewsets.ReadOnlyModelViewSet):
    """Active users; filter by `role` and `department` (e.g. operators of a department, for assignment)."""

    serializer_class = UserSerializer
    filterset_class = UserFilter
    ordering_fields = ["id", "username"]
    ordering = ["id"]
    queryset = User.objects.filter(is_active=True).select_related("department").order_by("id")

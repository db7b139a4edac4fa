"""OpenAPI: every API operation documents the JSON error body it may return (see core/exceptions.py),
and every write that takes one documents the optional Idempotency-Key header (core/idempotency.py)."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description=(
        "Makes the write safe to retry: 1-255 printable ASCII characters, unique per request, scoped to you, "
        "remembered for 24 hours. A repeat with the same method, path and body gets the first response back "
        "(same status and body, header `Idempotent-Replayed: true`) and changes nothing; a repeat while the "
        "first is still running gets 409 `idempotency_key_in_use` (Retry-After); the same key with another "
        "request gets 422 `idempotency_key_reused`. 5xx answers are not remembered."),
)


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx/5xx API response."""

    detail = serializers.CharField(help_text="Human-readable summary.")
    code = serializers.CharField(help_text="Machine-readable code: invalid, parse_error, not_authenticated, "
                                           "authentication_failed, permission_denied, not_found, "
                                           "method_not_allowed, conflict, ...")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='Per-field messages for 400 validation errors ("non_field_errors" for the whole body); '
                  "{} otherwise.",
    )


ERROR_DESCRIPTIONS = {
    "400": "Invalid input (body, filter, page or page_size).",
    "401": "Not authenticated.",
    "403": "Authenticated but not allowed.",
    "404": "Not found (or not visible to you).",
    "409": "The object's current state does not allow this (or a request with this Idempotency-Key is still "
           "running).",
    "422": "This Idempotency-Key was already used for a different request.",
}


def takes_idempotency_key(view, method: str) -> bool:
    return method in WRITE_METHODS and getattr(view, "idempotent_writes", False)


class ErrorResponseAutoSchema(AutoSchema):
    """AutoSchema that adds the shared error body for 400/401/403/404 (and 409 on writes; 422 and the
    Idempotency-Key header on writes that take one)."""

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if takes_idempotency_key(self.view, self.method):
            parameters = [*parameters, IDEMPOTENCY_KEY_PARAMETER]
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = ["400", "401", "403", "404"]
        if self.method in WRITE_METHODS:
            codes.append("409")
        if takes_idempotency_key(self.view, self.method):
            codes.append("422")
        for code in codes:
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = ERROR_DESCRIPTIONS[code]
                responses[code] = response
        return responses

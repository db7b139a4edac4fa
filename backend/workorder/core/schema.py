"""OpenAPI: every API operation documents the JSON error body it may return (see core/exceptions.py)."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


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
    "409": "The object's current state does not allow this.",
}


class ErrorResponseAutoSchema(AutoSchema):
    """AutoSchema that adds the shared error body for 400/401/403/404 (and 409 on writes)."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = ["400", "401", "403", "404"]
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes.append("409")
        for code in codes:
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = ERROR_DESCRIPTIONS[code]
                responses[code] = response
        return responses

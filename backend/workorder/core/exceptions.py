"""JSON errors everywhere, one shape: the API edge, where domain errors become HTTP.

Every error response body is:
    {"detail": "<human-readable summary>", "code": "<machine code>", "errors": {"<field>": ["<message>", ...]}}
`errors` holds per-field messages for 400 validation errors ("non_field_errors" for the body as a
whole) and is {} otherwise. Codes: invalid, parse_error, not_authenticated, authentication_failed,
permission_denied, not_found, method_not_allowed, not_acceptable, unsupported_media_type,
throttled, conflict, request_too_large (413), service_unavailable (503: database unreachable,
retry), server_error.

Domain errors (core/errors.py) raised by services are mapped here and nowhere else: ValidationError
400 invalid, PermissionDenied 403 permission_denied, NotFound 404 not_found, Conflict 409 conflict,
TooManyAttempts 429 throttled and Unavailable 503 service_unavailable, both with a Retry-After header
(seconds). `domain_error_response()` gives the same body for errors raised outside DRF views (the
admin login, through accounts.lockout.LoginLockedOutMiddleware).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from . import errors as domain

logger = logging.getLogger("workorder.api")


class HttpConflict(exceptions.APIException):
    """409: the request is valid but the object's current state does not allow it."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = domain.Conflict.default_message
    default_code = "conflict"


class DatabaseUnavailable(exceptions.APIException):
    """503: the database cannot be reached (restart, failover) or asked us to retry (deadlock)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; retry in a moment."
    default_code = "service_unavailable"


class RetryLater(exceptions.APIException):
    """503 with Retry-After: a resource is saturated for the moment (e.g. password hashing)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = domain.Unavailable.default_message
    default_code = "service_unavailable"

    def __init__(self, detail=None, *, wait: int):
        super().__init__(detail)
        self.wait = wait  # DRF's exception_handler turns `wait` into Retry-After


class PayloadTooLarge(exceptions.APIException):
    """413: the request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            out.extend(f"{key}: {message}" for message in _flatten(value))
        return out
    if isinstance(detail, (list, tuple)):
        out = []
        for item in detail:
            out.extend(_flatten(item))
        return out
    return [str(detail)]


def _field_errors(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    return {"non_field_errors": _flatten(detail)}


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return exc.default_code


def _from_domain(exc: domain.DomainError) -> exceptions.APIException:
    if isinstance(exc, domain.NotFound):
        return exceptions.NotFound(exc.message)
    if isinstance(exc, domain.PermissionDenied):
        return exceptions.PermissionDenied(exc.message)
    if isinstance(exc, domain.Conflict):
        return HttpConflict(exc.message)
    if isinstance(exc, domain.TooManyAttempts):
        throttled = exceptions.Throttled(wait=exc.retry_after)
        throttled.detail = exceptions.ErrorDetail(exc.message, code="throttled")
        return throttled
    if isinstance(exc, domain.Unavailable):
        return RetryLater(exc.message, wait=exc.retry_after)
    if isinstance(exc, domain.ValidationError):
        return exceptions.ValidationError(exc.errors)
    return exceptions.ValidationError({domain.NON_FIELD_ERRORS: [exc.message]})


def json_exception_handler(exc, context):
    if isinstance(exc, domain.DomainError):
        exc = _from_domain(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        from django.conf import settings

        exc = PayloadTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError("The request was malformed.")
    elif isinstance(exc, RecursionError):
        # json.loads() of deeply nested arrays/objects ([[[[...]]]]) while parsing the body.
        exc = exceptions.ParseError("JSON parse error - the document is nested too deeply.")
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # PostgreSQL restarting or unreachable, a deadlock, a lock timeout: retryable, so 503, not 500.
        logger.warning("database unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, DataError):
        # e.g. a value the database cannot store; the caller sent something out of range.
        exc = exceptions.ValidationError({"non_field_errors": ["A value is out of the accepted range."]})

    response = exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        set_rollback()
        return Response(
            {"detail": "Internal server error.", "code": "server_error", "errors": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        first = next(iter(errors.items()), None)
        summary = "Invalid input."
        if first and first[1]:
            summary = first[1][0] if first[0] == "non_field_errors" else f"{first[0]}: {first[1][0]}"
        body = {"detail": summary, "code": "invalid", "errors": errors}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body = {"detail": " ".join(_flatten(detail)), "code": _code(exc), "errors": {}}
    response.data = body
    if isinstance(exc, DatabaseUnavailable):
        response["Retry-After"] = "1"
    return response


def domain_error_response(exc: domain.TooManyAttempts | domain.Unavailable):
    """429/503 with Retry-After and the usual JSON body, for errors raised outside DRF views."""
    from django.http import JsonResponse

    if isinstance(exc, domain.TooManyAttempts):
        status_code, code = status.HTTP_429_TOO_MANY_REQUESTS, "throttled"
    else:
        status_code, code = status.HTTP_503_SERVICE_UNAVAILABLE, "service_unavailable"
    response = JsonResponse({"detail": exc.message, "code": code, "errors": {}}, status=status_code)
    response["Retry-After"] = str(exc.retry_after)
    return response


# --- Django-level errors (outside DRF views): a URL that matches no route, an error in middleware ---
def _wants_json(request) -> bool:
    return request.path_info.startswith("/api/")


def not_found(request, exception=None):
    """handler404: JSON under /api/ (e.g. /api/tasks/1.5/ matches no route), Django's page elsewhere."""
    if _wants_json(request):
        from django.http import JsonResponse

        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request):
    """handler500: JSON under /api/, Django's page elsewhere."""
    if _wants_json(request):
        from django.http import JsonResponse

        return JsonResponse({"detail": "Internal server error.", "code": "server_error", "errors": {}}, status=500)
    from django.views.defaults import server_error as default_server_error

    return default_server_error(request)

"""Middleware at the HTTP edge of the application: what is refused before any view runs, and the
Content-Security-Policy of the HTML pages.

- RequestBodyLimitMiddleware: a body whose Content-Length is over DATA_UPLOAD_MAX_MEMORY_SIZE is
  refused with 413 JSON before anything reads it. Django's own check covers only what it reads into
  memory (not the file parts of a multipart body, which it streams to disk); this one covers every
  body, whatever its type. nginx refuses the same bodies with the same limit (nix/deployment.nix).
- HostValidationMiddleware: a Host header outside ALLOWED_HOSTS is 400 JSON and one INFO line,
  not Django's ERROR with a traceback (a scanner sending random Host headers is not an error of ours).
- ContentSecurityPolicyMiddleware: a strict policy on the HTML pages (the API docs, the admin). No
  inline script is allowed anywhere: Swagger UI's init script is served as a file
  (SpectacularSwaggerSplitView), Redoc's page has none (core/docs.py), the admin has none.

Place RequestBodyLimitMiddleware and HostValidationMiddleware right after
OperationalEndpointsMiddleware (the probes answer whatever the Host), before SecurityMiddleware
(whose HTTPS redirect reads the host).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import JsonResponse

logger = logging.getLogger("workorder.edge")


def error_response(status: int, detail: str, code: str) -> JsonResponse:
    """The JSON error shape of core/exceptions.py, for answers given before DRF is involved."""
    response = JsonResponse({"detail": detail, "code": code, "errors": {}}, status=status)
    response["Content-Length"] = str(len(response.content))  # answered before CommonMiddleware sets it
    return response


def _content_length(request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:  # gunicorn refuses a malformed Content-Length before Django sees it
        return None


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = _content_length(request)
        if limit is not None and length is not None and length > limit:
            return error_response(413, f"The request body is larger than {limit} bytes.", "request_too_large")
        return self.get_response(request)


class HostValidationMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            request.get_host()
        except DisallowedHost:
            host = request.META.get("HTTP_HOST", "")
            logger.info("refused a request for host %s", ascii(host[:200]))
            return error_response(400, "The Host header names a host this service does not serve.", "invalid_host")
        return self.get_response(request)


# Swagger UI and Redoc set styles from JavaScript and ship small inline <style> blocks, and Redoc
# renders the schema in a blob: worker; nothing else leaves 'self'.
CSP_DIRECTIVES = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "manifest-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)
CONTENT_SECURITY_POLICY = "; ".join(CSP_DIRECTIVES)
CSP_PATH_PREFIXES = ("/api/docs/", "/api/redoc/", "/admin/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path_info.startswith(CSP_PATH_PREFIXES) and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

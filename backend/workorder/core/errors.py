"""Domain errors: what a broken rule means, independent of HTTP.

Services raise these; the API edge (core/exceptions.py) maps them to HTTP once: ValidationError 400
(with per-field messages), PermissionDenied 403, NotFound 404, Conflict 409, TooManyAttempts 429 and
Unavailable 503 (both with Retry-After). Admin actions show them
as messages. str(error) is the human-readable message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NON_FIELD_ERRORS = "non_field_errors"


class DomainError(Exception):
    """A request that the rules refuse. Subclasses say why; a bare DomainError is invalid input."""

    default_message = "The request cannot be carried out."

    def __init__(self, message: str | None = None):
        self.message = message or self.default_message
        super().__init__(self.message)


class NotFound(DomainError):
    """The object does not exist (or is not visible to the caller: the same answer, nothing leaks)."""

    default_message = "Not found."


class PermissionDenied(DomainError):
    """The caller may see the object but their role may not do this."""

    default_message = "You do not have permission to perform this action."


class Conflict(DomainError):
    """The request is valid but the object's current state does not allow it."""

    default_message = "The object's current state does not allow this."


class TooManyAttempts(DomainError):
    """Refused for a while after too many failed attempts (login lockout); retry_after is in seconds."""

    default_message = "Too many failed attempts; try again later."

    def __init__(self, message: str | None = None, *, retry_after: int):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message)


class Unavailable(DomainError):
    """A resource is saturated for the moment (e.g. password hashing); retry after retry_after seconds."""

    default_message = "The service is busy; retry in a moment."

    def __init__(self, message: str | None = None, *, retry_after: int = 1):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message)


class ValidationError(DomainError):
    """Invalid input: messages per field ("non_field_errors" for the request as a whole)."""

    default_message = "Invalid input."

    def __init__(self, errors: Mapping[str, Sequence[str] | str] | str):
        if isinstance(errors, str):
            errors = {NON_FIELD_ERRORS: [errors]}
        self.errors: dict[str, list[str]] = {
            field: [messages] if isinstance(messages, str) else list(messages) for field, messages in errors.items()
        }
        first = next((messages[0] for messages in self.errors.values() if messages), None)
        super().__init__(first)

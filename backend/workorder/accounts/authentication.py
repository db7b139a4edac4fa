"""`Authorization: Token <key>` for the API, with the lifetimes of accounts/tokens.py.

Keys that cannot exist (longer than 64 characters, or containing NUL, which psycopg2 would turn into a
500) are refused before the database is asked. Unknown, expired and revoked tokens, and tokens of
inactive users, are all the same 401 "Invalid or expired token.".
"""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from .tokens import authenticate_key


class ExpiringTokenAuthentication(TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key):
        result = authenticate_key(key)
        if result is None:
            raise AuthenticationFailed("Invalid or expired token.")
        return result  # (user, token): request.auth is the AuthToken

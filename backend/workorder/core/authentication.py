"""API token authentication that refuses impossible keys before asking the database.

DRF's TokenAuthentication passes any key to the database; a NUL byte in it (`Authorization:
Token \\x00`) makes psycopg2 raise ValueError, which would be a 500. Keys are 40 characters
(rest_framework.authtoken), so anything longer or containing NUL is simply an invalid token (401).
"""

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

MAX_TOKEN_LENGTH = 40


class StrictTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        if len(key) > MAX_TOKEN_LENGTH or "\x00" in key:
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)

"""Signals other apps listen to (e.g. the WebSocket code closes sockets opened with a revoked token).

tokens_revoked: sent after the revoking transaction commits, with
    user_id: int                  whose tokens were revoked;
    token_ids: list[int] | None   the AuthToken ids revoked, or None for every token of the user
                                  (password change, deactivation).
"""

from django.dispatch import Signal

tokens_revoked = Signal()

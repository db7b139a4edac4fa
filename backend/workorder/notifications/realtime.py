"""Live delivery of notifications over the channel layer (owned by the production-runtime work)."""


def push(notifications) -> None:
    """Send each notification to its recipient's open WebSocket connections. Called after commit."""

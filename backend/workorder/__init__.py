"""workorder: a shop-floor work-order service (Django + DRF + Channels)."""

__version__ = "0.1.0"

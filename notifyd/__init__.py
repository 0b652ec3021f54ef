"""notifyd: a self-hosted notification daemon."""

__version__ = "0.1.0"

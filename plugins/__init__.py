"""Bundled notifyd plugins (installed as notifyd.plugins)."""

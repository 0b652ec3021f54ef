"""The headless core of notifyd: models, store, hub, accounts.

Nothing in this package imports the web framework, click or textual; the HTTP API,
the CLI and the TUI are thin layers on top of it.
"""

"""Settings: the one place defaults live (pydantic-settings, ``DRIFTD_`` environment, TOML).

:mod:`driftd.settings.root` is the root class; one module per section. Only the composition
roots, the CLI and the tools import this package; it imports nothing else of driftd.
"""

"""Settings in, core objects out: the one place the pydantic settings meet the core.

The composition roots (``driftd.app``, ``driftd.infer``, ``driftd.library``) and the tools build
the core through these functions; the core itself takes plain parameters and frozen configs and
never imports :mod:`driftd.settings`. May import the core and the settings, never the adapters.
"""

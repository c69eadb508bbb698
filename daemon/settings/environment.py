"""``DRIFTD_*`` variables that set nothing: a typo such as ``DRIFTD_SNAPSHOTS_DIR`` (one ``_``).

pydantic-settings ignores an environment variable that names no field, so a misspelt setting
silently keeps its default. :func:`stray_variables` finds them and the nearest real name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic import BaseModel

PREFIX = "DRIFTD_"
#: ``DRIFTD_*`` variables that are not settings paths: the config file, the tools' own.
NOT_SETTINGS = frozenset(
    {"CONFIG", "VENV", "EXTRAS", "PYTHON", "TEST_INSTALL", "FAULTS_HEAVY", "SOAK_SECONDS"}
)


def setting_variables(settings_cls: type[BaseModel]) -> list[str]:
    """Every ``DRIFTD_<SECTION>__<FIELD>`` name (and ``DRIFTD_<FIELD>`` at the top) there is."""
    names = []
    for section, info in settings_cls.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += [f"{PREFIX}{section}__{field}".upper() for field in nested.model_fields]
        else:
            names.append(f"{PREFIX}{section}".upper())
    return names


def stray_variables(
    environ: Mapping[str, str] | Iterable[str], settings_cls: type[BaseModel]
) -> list[tuple[str, str | None]]:
    """``DRIFTD_*`` variables without ``__`` that name no setting, each with the nearest one.

    Names with ``__`` are checked elsewhere (an unknown section or field is an error).

    Returns:
        ``(variable, suggestion or None)`` pairs, sorted by variable.
    """
    known = setting_variables(settings_cls)
    sections = settings_cls.model_fields
    found = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(PREFIX) or "__" in upper or upper in known:
            continue
        if upper[len(PREFIX) :] in NOT_SETTINGS or upper[len(PREFIX) :].lower() in sections:
            continue  # a section name takes a JSON object: pydantic-settings reads it
        nearest = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        found.append((name, nearest[0] if nearest else None))
    return sorted(found)


def stray_message(name: str, suggestion: str | None) -> str:
    """One warning line for a stray variable."""
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    return (
        f"{name} is not a driftd setting and is ignored{hint} (a setting is "
        "DRIFTD_<SECTION>__<FIELD>, double underscore; `driftd config` prints them all)"
    )

"""How this process was started, so the commands driftd prints work when pasted."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def driftd_command(argv0: str | None = None) -> str:
    """The command that runs driftd the way this process was run.

    After ``.venv/bin/driftd demo`` a bare ``driftd`` is not on PATH (the venv is not active),
    so the commands the demo prints start with ``.venv/bin/driftd``; ``driftd`` only when that
    is what PATH finds; ``python -m driftd.cli`` when run that way.

    Args:
        argv0: The program path as started (``sys.argv[0]`` when None).
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    path = Path(argv0)
    if path.name != "driftd":
        return f"{shlex.quote(sys.executable)} -m driftd.cli"
    on_path = shutil.which("driftd")
    if on_path is not None and _same_file(on_path, argv0):
        return "driftd"
    return shlex.quote(argv0 if os.sep in argv0 else str(path.resolve()))


def python_command(driftd: str | None = None) -> str:
    """The interpreter beside :func:`driftd_command`'s script (``.venv/bin/python``)."""
    driftd = driftd_command() if driftd is None else driftd
    if driftd.endswith("/driftd"):
        beside = driftd.removesuffix("driftd") + "python"
        if Path(beside).exists():
            return beside
    return shlex.quote(sys.executable)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

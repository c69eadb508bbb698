"""Write constraints.txt: the exact versions of everything driftd and its extras need.

pyproject.toml declares the ranges driftd supports (what a library user's environment may
hold); constraints.txt pins the versions the project is tested with, for the test venv, the
image and the README's install. Run it with the interpreter of a venv that passed the tests:

    ~/.cache/driftd/venv-<key>/bin/python scripts/constraints.py > constraints.txt

It walks the requirements of ``driftd[<every extra>]`` through the installed distributions
(environment markers evaluated here), so tools installed into the venv by hand stay out.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# The exact versions driftd is tested with (pyproject.toml declares the supported ranges).
# Use it for every install: pip install -c constraints.txt ".[test]"
# torch: this pins the release; the CPU build comes from https://download.pytorch.org/whl/cpu
# (README.md, Install). Regenerate from a venv that passed the tests:
#   <venv>/bin/python scripts/constraints.py > constraints.txt
"""


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Installed name -> version of every distribution ``roots`` need, transitively."""
    environment: dict[str, str] = {key: str(value) for key, value in default_environment().items()}

    def applies(requirement: Requirement, extras: tuple[str, ...]) -> bool:
        marker = requirement.marker
        return marker is None or any(
            marker.evaluate({**environment, "extra": extra}) for extra in (*extras, "")
        )

    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [root for root in roots if applies(root, ())]
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        distribution = metadata.distribution(requirement.name)
        found[name] = distribution.version
        for text in distribution.requires or []:
            nested = Requirement(text)
            if applies(nested, tuple(sorted(extras))):
                todo.append(nested)
    return found


def main() -> int:
    """Print constraints.txt for this interpreter's environment."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lists = [project["dependencies"], *project.get("optional-dependencies", {}).values()]
    roots = [Requirement(text) for texts in lists for text in texts]
    pins = closure(roots)
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(pins.items())]
    sys.stdout.write(HEADER + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

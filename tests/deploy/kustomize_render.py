"""A small kustomize renderer: the subset of kustomize that deploy/k8s uses, to check its output.

No kubectl or kustomize binary exists on the test machines, so this renders a kustomization
the way ``kubectl kustomize`` does for the fields used here, and refuses any other field (so a
new one cannot slip by unchecked): ``resources`` (files and directories holding a
kustomization), ``namespace``, ``labels`` (``pairs`` + ``includeSelectors``), ``images``,
``replicas``, ``configMapGenerator`` / ``secretGenerator`` (``literals``, ``envs``,
``behavior: merge``; a content-hash name suffix, with references in pod specs rewritten), and
``patches`` given as strategic-merge files (lists of objects with a ``name`` merge by name).
The hash differs from kustomize's own; what the tests check is that a hashed name is
referenced consistently.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas",
    "configMapGenerator", "secretGenerator", "patches",
}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is inconsistent."""


def render(directory: Path) -> list[Resource]:
    """The resources ``kubectl kustomize directory`` would output, generators' names hashed."""
    resources, generated = _build(directory)
    _hash_generated_names(resources, generated)
    return resources


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    """The one resource of ``kind`` whose generated or plain name starts with ``name``."""
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


def _build(directory: Path) -> tuple[list[Resource], set[tuple[str, str]]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    generated: set[tuple[str, str]] = set()
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            inner, inner_generated = _build(path)
            resources += inner
            generated |= inner_generated
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(key, []):
            _generate(directory, kind, generator, resources)
            generated.add((kind, generator["name"]))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only strategic-merge patch files are supported")
        _apply_patch(resources, yaml.safe_load((directory / patch["path"]).read_text()))
    for entry in kustomization.get("labels", []):
        _add_labels(resources, entry)
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    for replicas in kustomization.get("replicas", []):
        workloads = [r for r in resources if r["kind"] in WORKLOADS]
        _find_exact(workloads, None, replicas["name"])["spec"]["replicas"] = replicas["count"]
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources, generated


def _generate(directory: Path, kind: str, generator: dict[str, Any], out: list[Resource]) -> None:
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for env_file in generator.get("envs", []):
        for line in (directory / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = value
    if generator.get("behavior", "create") == "merge":
        existing = _find_exact(out, kind, generator["name"])
        existing.setdefault("data", {}).update(_encode(kind, data))
        return
    if any(r["kind"] == kind and r["metadata"]["name"] == generator["name"] for r in out):
        raise KustomizeError(f"{kind}/{generator['name']} generated twice without merge")
    out.append(
        {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": generator["name"]},
            "data": _encode(kind, data),
            **({"type": "Opaque"} if kind == "Secret" else {}),
        }
    )


def _encode(kind: str, data: dict[str, str]) -> dict[str, str]:
    if kind == "Secret":
        return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return data


def _find_exact(resources: list[Resource], kind: str | None, name: str) -> Resource:
    matches = [
        r
        for r in resources
        if r["metadata"]["name"] == name and (kind is None or r["kind"] == kind)
    ]
    if len(matches) != 1:
        raise KustomizeError(f"{kind or 'resource'}/{name}: {len(matches)} matches")
    return matches[0]


def _apply_patch(resources: list[Resource], patch: Resource) -> None:
    target = _find_exact(resources, patch["kind"], patch["metadata"]["name"])
    _merge(target, patch)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Strategic merge, simplified: maps merge, lists of named objects merge by name."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif _named_list(value) and _named_list(current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _add_labels(resources: list[Resource], entry: dict[str, Any]) -> None:
    if set(entry) - {"pairs", "includeSelectors"} or entry.get("includeSelectors", False):
        raise KustomizeError("labels: only pairs with includeSelectors: false are supported")
    for resource in resources:
        resource["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _set_image(resources: list[Resource], image: dict[str, Any]) -> None:
    for container in _containers(resources):
        name, _, _ = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def _containers(resources: list[Resource]) -> Iterator[dict[str, Any]]:
    for resource in resources:
        if resource["kind"] in WORKLOADS:
            spec = pod_spec(resource)
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def _hash_generated_names(resources: list[Resource], generated: set[tuple[str, str]]) -> None:
    renamed: dict[tuple[str, str], str] = {}
    for kind, name in generated:
        resource = _find_exact(resources, kind, name)
        digest = hashlib.sha256(json.dumps(resource["data"], sort_keys=True).encode()).digest()
        suffix = base64.b32encode(digest).decode().lower()[:10]
        resource["metadata"]["name"] = renamed[(kind, name)] = f"{name}-{suffix}"
    for resource in resources:
        if resource["kind"] in WORKLOADS:
            _rename_references(pod_spec(resource), renamed)


def _rename_references(spec: dict[str, Any], renamed: dict[tuple[str, str], str]) -> None:
    def rename(holder: dict[str, Any], kind: str, key: str = "name") -> None:
        holder[key] = renamed.get((kind, holder[key]), holder[key])

    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                rename(source["configMapRef"], "ConfigMap")
            if "secretRef" in source:
                rename(source["secretRef"], "Secret")
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {})
            if "configMapKeyRef" in reference:
                rename(reference["configMapKeyRef"], "ConfigMap")
            if "secretKeyRef" in reference:
                rename(reference["secretKeyRef"], "Secret")
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            rename(volume["configMap"], "ConfigMap")
        if "secret" in volume:
            rename(volume["secret"], "Secret", "secretName")

"""A small kustomize build for the features deploy/k8s uses, so `make test` needs no kubectl.

Supported, as kustomize does them: `resources` (files and directories with a kustomization),
`namespace`, `labels` (metadata only), `configMapGenerator` (`files`, `literals`; with the content
hash suffix and the references to it rewritten), `images`, `replicas` and `patches` with JSON 6902
operations and a kind/name target. Anything else in a kustomization fails the build loudly, so a
new feature in the manifests cannot slip past the validation unseen.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
_SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "configMapGenerator",
    "images",
    "replicas",
    "patches",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


class KustomizeError(ValueError):
    """The kustomization uses something this build does not support, or refers to nothing."""


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` would produce (in kustomize's own order or not)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += build(target)
        elif target.is_file():
            resources += load_documents(target)
        else:
            raise KustomizeError(f"{directory}: resource {entry} does not exist")
    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _config_map(directory, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        resources.append(config_map)
    for patch in kustomization.get("patches", []):
        _patch(resources, patch)
    for labels in kustomization.get("labels", []):
        if labels.get("includeSelectors") or labels.get("includeTemplates"):
            raise KustomizeError("labels: only metadata labels are supported")
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])
    for replicas in kustomization.get("replicas", []):
        _find(resources, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    _rename_config_maps(resources, renames)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def _config_map(directory: Path, generator: dict[str, Any]) -> Resource:
    extra = set(generator) - {"name", "files", "literals"}
    if extra:
        raise KustomizeError(f"configMapGenerator {generator['name']}: unsupported {sorted(extra)}")
    data: dict[str, str] = {}
    for file in generator.get("files", []):
        path = directory / file
        if not path.is_file():
            raise KustomizeError(f"configMapGenerator {generator['name']}: {file} does not exist")
        data[path.name] = path.read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{generator['name']}-{digest}"},
        "data": data,
    }


def _find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise KustomizeError(f"no {kind} named {name}")


def _patch(resources: list[Resource], patch: dict[str, Any]) -> None:
    target = patch.get("target", {})
    if set(target) - {"kind", "name"} or "path" in patch:
        raise KustomizeError("patches: only inline JSON 6902 patches with a kind/name target are supported")
    # Generated ConfigMaps are patched by their generator name, before the hash suffix counts.
    matches = [
        r
        for r in resources
        if r["kind"] == target["kind"] and r["metadata"]["name"].startswith(target["name"])
    ]
    if len(matches) != 1:
        raise KustomizeError(f"patch target {target} matches {len(matches)} resources")
    for operation in yaml.safe_load(patch["patch"]):
        _apply(matches[0], operation)


def _apply(resource: Resource, operation: dict[str, Any]) -> None:
    *parents, last = [part for part in operation["path"].split("/") if part]
    node: Any = resource
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if operation["op"] == "replace":
        if isinstance(node, dict) and key not in node:
            raise KustomizeError(f"replace: {operation['path']} does not exist")
        node[key] = copy.deepcopy(operation["value"])
    elif operation["op"] == "add":
        node[key] = copy.deepcopy(operation["value"])
    else:
        raise KustomizeError(f"unsupported patch op {operation['op']}")


def _containers(resource: Resource) -> list[dict[str, Any]]:
    template = resource.get("spec", {}).get("template", {}).get("spec", {})
    return list(template.get("containers", [])) + list(template.get("initContainers", []))


def _set_image(resources: list[Resource], image: dict[str, Any]) -> None:
    for resource in resources:
        for container in _containers(resource):
            name = container["image"].split(":")[0]
            if name == image["name"]:
                tag = image.get("newTag", container["image"].partition(":")[2])
                container["image"] = (
                    f"{image.get('newName', name)}:{tag}" if tag else image.get("newName", name)
                )


def _rename_config_maps(resources: list[Resource], renames: dict[str, str]) -> None:
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("configMapRef", "configMap", "configMapKeyRef"):
                ref = node.get(key)
                if isinstance(ref, dict) and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for resource in resources:
        if resource["kind"] != "ConfigMap":
            visit(resource)

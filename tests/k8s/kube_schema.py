"""Strict validation of Kubernetes manifests against CRD schemas, as the API server does it.

`kubectl apply --validate=strict` (server-side field validation) rejects a manifest with
a field the schema does not know, a value of the wrong type, a value outside an enum, a
missing required field or a duplicate key. A JSON-schema validator alone would accept
unknown fields: an OpenAPI object schema without `additionalProperties` allows any extra
key. So the CRD's structural schema is first rewritten (`strict_schema`) into one that
the `jsonschema` package enforces the way the API server does:

- an object schema (`type: object` or `properties`) without `additionalProperties` and
  without `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties: false`
  (the API server prunes, and strict validation reports, every other field);
  `additionalProperties: {...}` stays a map of free keys;
- `x-kubernetes-int-or-string: true` means "integer or string" (`anyOf`), e.g. resource
  quantities like `4Gi` or `1`;
- `nullable: true` also admits null;
- `x-kubernetes-embedded-resource: true` objects also have apiVersion, kind and metadata;
- the root `metadata` (which a CRD leaves as a bare `type: object`; the API server
  validates it as ObjectMeta) gets a strict ObjectMeta schema with a required name.

Two Kubernetes keywords are enforced by an extended validator: `x-kubernetes-list-type`
(`map`: no two items with the same `x-kubernetes-list-map-keys`, e.g. two containers
named alike; `set`: no duplicate items) and the `int32`/`int64`/`byte` formats. CEL rules
(`x-kubernetes-validations`) are not evaluated.

Besides KubeRay's, the Prometheus Operator's PodMonitor CRD is vendored the same way.
Plain objects (Secret, ConfigMap) are checked against small strict schemas written here.
Messages name the path the way kubectl does: `unknown field "spec.shutdownAfterJobFinish"`,
`spec.rayClusterSpec.workerGroupSpecs[0].replicas: 'two' is not of type 'integer'`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft7Validator, FormatChecker, ValidationError

RAY_API_VERSION = "ray.io/v1"

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"  # a Secret or ConfigMap data key
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# The ObjectMeta fields a manifest may set (server-populated ones such as uid or
# resourceVersion have no business in a file in the repository).
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
ROOT_META = {**OBJECT_META, "required": ["name"]}


def strict_schema(schema: dict) -> dict:
    """A copy of a CRD's openAPIV3Schema that jsonschema enforces as strictly as the API server."""
    out = _strict(copy.deepcopy(schema))
    props = out.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = ROOT_META
    out["required"] = sorted({*out.get("required", []), "apiVersion", "kind", "metadata"})
    return out


def _strict(node: Any) -> Any:
    """Rewrite one schema node (and everything below it) in place; see the module docstring."""
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string") and not any(k in node for k in ("anyOf", "oneOf", "type")):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = node.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", copy.deepcopy(OBJECT_META))
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _strict(sub) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = _strict(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(node.get(key), list):
            node[key] = [_strict(sub) for sub in node[key]]
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


def _list_type(validator, list_type, instance, schema) -> Iterator[ValidationError]:
    """`x-kubernetes-list-type`: map items are unique by their map keys, set items unique."""
    if not validator.is_type(instance, "array"):
        return
    seen: dict[str, int] = {}
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        item_props = schema.get("items", {}).get("properties", {})
        for index, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            # A key left out takes its default (a port's protocol is TCP unless stated).
            value = {k: item.get(k, item_props.get(k, {}).get("default")) for k in keys}
            token = json.dumps(value, sort_keys=True)
            if token in seen:
                yield ValidationError(f"duplicate entry {value} (also item {seen[token]})", path=[index])
            seen.setdefault(token, index)
    elif list_type == "set":
        for index, item in enumerate(instance):
            token = json.dumps(item, sort_keys=True)
            if token in seen:
                yield ValidationError(f"duplicate value {item!r} (also item {seen[token]})", path=[index])
            seen.setdefault(token, index)


FORMATS = FormatChecker()


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**63) <= value < 2**63


@FORMATS.checks("byte", raises=(binascii.Error, ValueError))
def _byte(value: Any) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


KubeValidator = jsonschema.validators.extend(Draft7Validator, {"x-kubernetes-list-type": _list_type})


def _plain(api_version: str, kind: str, body: dict[str, Any]) -> dict:
    """A strict schema of a built-in object: apiVersion, kind, named metadata and ``body``."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": ROOT_META,
            **body,
        },
        "additionalProperties": False,
    }


_DATA = {"type": "object", "propertyNames": {"pattern": _CONFIG_KEY}}
PLAIN_SCHEMAS: dict[tuple[str, str], dict] = {
    ("v1", "Secret"): _plain(
        "v1",
        "Secret",
        {
            "type": {"type": "string"},
            "immutable": {"type": "boolean"},
            "data": {**_DATA, "additionalProperties": {"type": "string", "format": "byte"}},
            "stringData": {**_DATA, "additionalProperties": {"type": "string"}},
        },
    ),
    ("v1", "ConfigMap"): _plain(
        "v1",
        "ConfigMap",
        {
            "immutable": {"type": "boolean"},
            "data": {**_DATA, "additionalProperties": {"type": "string"}},
            "binaryData": {**_DATA, "additionalProperties": {"type": "string", "format": "byte"}},
        },
    ),
}


def format_path(path: Iterable[Any]) -> str:
    """`spec.workerGroupSpecs[0].replicas` from ("spec", "workerGroupSpecs", 0, "replicas")."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def describe(error: ValidationError) -> list[str]:
    """kubectl-like messages for one jsonschema error, each naming the full path."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        return [f'unknown field "{format_path([*path, name])}"' for name in sorted(set(error.instance) - known)]
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return [f"{format_path(path)}: {error.instance!r} must be an integer or a string"]
    return [f"{format_path(path)}: {error.message}"]


class ManifestValidator:
    """Validates manifest documents: Ray CRDs by their vendored schemas, plain objects here."""

    def __init__(self, crd_schemas: dict):
        """``crd_schemas``: (apiVersion, kind) -> the CRD's openAPIV3Schema of that version;
        a bare kind (RayCluster, ...) means apiVersion ray.io/v1."""
        self._validators = {
            (key if isinstance(key, tuple) else (RAY_API_VERSION, key)): KubeValidator(
                strict_schema(schema), format_checker=FORMATS
            )
            for key, schema in crd_schemas.items()
        }
        for key, schema in PLAIN_SCHEMAS.items():
            KubeValidator.check_schema(schema)
            self._validators[key] = KubeValidator(schema, format_checker=FORMATS)

    def errors(self, doc: Any) -> list[str]:
        """Every problem of one document, sorted by path; [] when it is valid."""
        if not isinstance(doc, dict):
            return [f"<root>: a manifest must be a mapping, got {type(doc).__name__}"]
        key = (doc.get("apiVersion"), doc.get("kind"))
        validator = self._validators.get(key)
        if validator is None:
            known = ", ".join(f"{a} {k}" for a, k in sorted(self._validators))
            return [f"<root>: no schema for apiVersion={key[0]!r} kind={key[1]!r} (known: {known})"]
        messages = [m for e in validator.iter_errors(doc) for m in describe(e)]
        if key == ("v1", "Secret") and "data" not in doc and "stringData" not in doc:
            messages.append("<root>: a Secret needs data or stringData")
        return sorted(messages)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe YAML loader that refuses duplicate mapping keys (kubectl does too)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_documents(text: str) -> list[Any]:
    """The non-empty documents of a (multi-document) YAML manifest."""
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc is not None]


def load_file(path: Path) -> list[Any]:
    """`load_documents` of a file."""
    return load_documents(path.read_text())

"""Vendor the CRD schemas that tests/k8s/test_manifests.py validates against.

    python tests/k8s/vendor_crds.py [CRD_DIR_OR_FILE ...]   # default: ../shared/kuberay-crds

A directory stands for KubeRay's three CRD files in it; a file is any one CRD (e.g.
Prometheus Operator's monitoring.coreos.com_podmonitors.yaml).

A CustomResourceDefinition file is about 1 MB of YAML, almost all of it the
`spec.versions[name=v1].schema.openAPIV3Schema` that the API server applies to a
manifest. This script extracts exactly that schema from each `ray.io_<plural>.yaml` and
writes it as compact, gzip-compressed JSON to `tests/k8s/crds/<kind>.schema.json.gz`
(for example `raycluster.schema.json.gz`), so the tests run from a clean clone without
the CRD files. The output is deterministic (sorted keys, gzip mtime 0): re-running it on
the same CRDs rewrites identical bytes, and `git diff` shows only real schema changes.

Only PyYAML and the standard library: no Ray, no Kubernetes client.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT_DIR = HERE / "crds"
# Where the full CRD files live in this workspace; a CI clone may not have it.
DEFAULT_CRD_DIR = ROOT.parent / "shared" / "kuberay-crds"
CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml")
VERSION = "v1"
# kind -> the apiVersion its vendored schema is for
API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "RayService": "ray.io/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~20x faster on 1 MB files


def extract(crd_path: Path, version: str = VERSION) -> tuple[str, dict]:
    """(kind, openAPIV3Schema of `version`) of one CRD file."""
    crd = yaml.load(crd_path.read_text(), Loader=_Loader)
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{crd_path} is not a CustomResourceDefinition")
    kind = crd["spec"]["names"]["kind"]
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return kind, entry["schema"]["openAPIV3Schema"]
    raise ValueError(f"{crd_path} has no version {version}")


def extract_all(crd_dir: Path = DEFAULT_CRD_DIR) -> dict[str, dict]:
    """kind -> v1 schema for the RayCluster, RayJob and RayService CRDs in ``crd_dir``."""
    return dict(extract(crd_dir / name) for name in CRD_FILES)


def encode(schema: dict) -> bytes:
    """The bytes of a vendored schema file: compact sorted JSON, gzip level 9, no timestamp."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


def schema_path(kind: str, out_dir: Path = OUT_DIR) -> Path:
    """Where the vendored schema of ``kind`` lives: crds/<kind lower-case>.schema.json.gz."""
    return out_dir / f"{kind.lower()}.schema.json.gz"


def load_vendored(kind: str, out_dir: Path = OUT_DIR) -> dict:
    """The vendored v1 schema of ``kind`` (what the tests validate against)."""
    return json.loads(gzip.decompress(schema_path(kind, out_dir).read_bytes()))


def load_all() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> vendored schema, for every vendored kind."""
    return {(api_version, kind): load_vendored(kind) for kind, api_version in API_VERSIONS.items()}


def main(argv: list[str]) -> int:
    sources = [Path(a) for a in argv] or [DEFAULT_CRD_DIR]
    schemas: dict[str, dict] = {}
    for source in sources:
        if source.is_dir():
            schemas.update(extract_all(source))
        elif source.is_file():
            kind, schema = extract(source)
            schemas[kind] = schema
        else:
            print(f"no CRD directory or file at {source}", file=sys.stderr)
            return 1
    OUT_DIR.mkdir(exist_ok=True)
    for kind, schema in schemas.items():
        if kind not in API_VERSIONS:
            print(f"{kind}: add its apiVersion to API_VERSIONS", file=sys.stderr)
            return 1
        path = schema_path(kind)
        path.write_bytes(encode(schema))
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Regenerate the serveConfigV2 block of k8s/ray-service.serve.yaml from serve_configs/cluster.yaml.

    python k8s/render.py            # rewrite k8s/ray-service.serve.yaml (only that block)
    python k8s/render.py --check    # exit 1 when the file is out of date, change nothing

The RayService must run exactly the Serve application that `serve deploy
serve_configs/cluster.yaml` runs; KubeRay wants it inline as a YAML string. Rather than
keep two copies in step by hand, the block is generated: the body of cluster.yaml (its
leading comment header dropped, inline comments kept) indented under `serveConfigV2: |`.
Everything else in the manifest, comments included, is left byte for byte as it is.
tests/k8s/test_manifests.py checks that the two parse to the same data.

Needs only PyYAML (to check the result), no Ray.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve_configs" / "cluster.yaml"
MANIFEST = ROOT / "k8s" / "ray-service.serve.yaml"

HEADER = [
    "# GENERATED from serve_configs/cluster.yaml by `python k8s/render.py`:",
    "# edit that file and re-run the script, not this block.",
]
_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: *\|[-+]?[0-9]? *$")


def serve_body(serve_config_text: str) -> list[str]:
    """The lines of a Serve config without its leading comment header and trailing blanks."""
    lines = serve_config_text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        start += 1
    body = lines[start:]
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise ValueError("the serve config is empty")
    return body


def render(manifest_text: str, serve_config_text: str) -> str:
    """``manifest_text`` with the serveConfigV2 literal block replaced by the serve config.

    The block is the line `serveConfigV2: |` and every following line that is blank or
    indented deeper than that key; trailing blank lines stay outside it.
    """
    lines = manifest_text.splitlines()
    keys = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if len(keys) != 1:
        raise ValueError(f"expected exactly one `serveConfigV2: |` line, found {len(keys)}")
    key = keys[0]
    indent = len(_KEY.match(lines[key]).group("indent"))
    end = key + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > indent):
        end += 1
    while end > key + 1 and not lines[end - 1].strip():
        end -= 1
    pad = " " * (indent + 2)
    block = [pad + line if line.strip() else "" for line in HEADER + serve_body(serve_config_text)]
    out = lines[: key] + [" " * indent + "serveConfigV2: |"] + block + lines[end:]
    text = "\n".join(out) + ("\n" if manifest_text.endswith("\n") else "")
    _check(text, serve_config_text)
    return text


def _check(manifest_text: str, serve_config_text: str) -> None:
    """Refuse to write a manifest whose serveConfigV2 is not the serve config as data."""
    docs = [d for d in yaml.safe_load_all(manifest_text) if d]
    services = [d for d in docs if d.get("kind") == "RayService"]
    if len(services) != 1:
        raise ValueError(f"expected one RayService in the manifest, found {len(services)}")
    if yaml.safe_load(services[0]["spec"]["serveConfigV2"]) != yaml.safe_load(serve_config_text):
        raise ValueError("the rendered serveConfigV2 does not parse to the serve config")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    current = MANIFEST.read_text()
    rendered = render(current, SERVE_CONFIG.read_text())
    rel = MANIFEST.relative_to(ROOT)
    if rendered == current:
        print(f"{rel} is up to date with {SERVE_CONFIG.relative_to(ROOT)}")
        return 0
    if check:
        print(f"{rel} is out of date: run `python k8s/render.py`", file=sys.stderr)
        return 1
    MANIFEST.write_text(rendered)
    print(f"rewrote the serveConfigV2 block of {rel} from {SERVE_CONFIG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

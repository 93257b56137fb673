"""Regenerate the generated files of k8s/ from their one source each.

    python k8s/render.py            # rewrite what is out of date
    python k8s/render.py --check    # exit 1 when a file is out of date, change nothing

- k8s/base/serve-config.yaml <- serve_configs/cluster.yaml. The RayService must run
  exactly the Serve application that `serve deploy serve_configs/cluster.yaml` runs, and
  KubeRay wants it inline (spec.serveConfigV2, a string). kustomize puts this copy there
  (a configMapGenerator + a replacement in k8s/base/kustomization.yaml); it reads no file
  outside its folder, hence the copy: the body of cluster.yaml (its leading comment
  header dropped, inline comments kept) under a GENERATED header.
- k8s/components/monitoring/emodistill-dashboard.json <- k8s/dashboard.py (the Grafana
  dashboard's panels and their PromQL).

tests/k8s checks that both are current (and that the rendered RayService's serveConfigV2
parses to the same data as cluster.yaml). Needs PyYAML only: no Ray, no cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVE_CONFIG = ROOT / "serve_configs" / "cluster.yaml"
SERVE_COPY = HERE / "base" / "serve-config.yaml"
DASHBOARD = HERE / "components" / "monitoring" / "emodistill-dashboard.json"

HEADER = [
    "# GENERATED from serve_configs/cluster.yaml by `python k8s/render.py`: edit that file and",
    "# re-run the script, not this one. kustomize puts it into the RayService's serveConfigV2.",
]


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


def render_serve_copy(serve_config_text: str) -> str:
    """The text of k8s/base/serve-config.yaml for a given serve_configs/cluster.yaml."""
    text = "\n".join(HEADER + serve_body(serve_config_text)) + "\n"
    if yaml.safe_load(text) != yaml.safe_load(serve_config_text):
        raise ValueError("the copy does not parse to the serve config")
    return text


def render_dashboard() -> str:
    sys.path.insert(0, str(HERE))
    try:
        import dashboard
    finally:
        sys.path.remove(str(HERE))
    return dashboard.render()


def targets() -> dict[Path, str]:
    """Generated file -> the text it must have."""
    return {SERVE_COPY: render_serve_copy(SERVE_CONFIG.read_text()), DASHBOARD: render_dashboard()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in targets().items():
        rel = path.relative_to(ROOT)
        if path.is_file() and path.read_text() == text:
            print(f"{rel} is up to date")
            continue
        stale.append(rel)
        if check:
            print(f"{rel} is out of date: run `python k8s/render.py`", file=sys.stderr)
        else:
            path.write_text(text)
            print(f"rewrote {rel}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

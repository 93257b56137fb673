"""The RayJob of batch inference (k8s/components/predict): an overlay that adds the
component renders it with the cluster's settings, KubeRay's CRD schema accepts it, and its
entrypoint is a job of this repository whose options `emodistill predict` knows."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import kube_schema
import vendor_crds

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    """The GPU overlay with ../../components/predict before the settings component."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "k8s", tree)
    kustomization = tree / "overlays" / "gpu" / "kustomization.yaml"
    text = kustomization.read_text()
    assert "  - ../../components/settings\n" in text
    kustomization.write_text(text.replace("  - ../../components/settings\n", "  - ../../components/predict\n  - ../../components/settings\n", 1))
    assert KUBECTL, "kubectl (with its built-in kustomize) is needed to render k8s/"
    out = subprocess.run([KUBECTL, "kustomize", str(tree / "overlays" / "gpu")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return kube_schema.load_documents(out.stdout)


def _job(docs):
    (job,) = [d for d in docs if d["kind"] == "RayJob" and d["metadata"]["name"] == "emodistill-predict"]
    return job


def test_the_predict_rayjob_validates_and_gets_the_cluster_settings(rendered):
    validator = kube_schema.ManifestValidator(vendor_crds.load_all())
    job = _job(rendered)
    assert validator.errors(job) == []
    spec = job["spec"]
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "emodistill-ray-auth"}
    (workers,) = cluster["workerGroupSpecs"]
    container = workers["template"]["spec"]["containers"][0]
    settings = next(d for d in kube_schema.load_file(ROOT / "k8s/overlays/gpu/settings.yaml"))["spec"]
    assert container["resources"] == settings["workerResources"]  # the settings component reached it
    assert workers["template"]["spec"]["nodeSelector"] == settings["workerNodeSelector"]


def test_the_entrypoint_is_a_job_of_the_repository_with_known_options(rendered):
    from emodistill.cli.predict import predict

    spec = _job(rendered)["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/predict.py"] and (ROOT / argv[1]).is_file()
    import inspect

    import typer

    options = set()
    for p in inspect.signature(predict).parameters.values():
        if isinstance(p.default, typer.models.OptionInfo):
            options.update(d for d in p.default.param_decls if d.startswith("--"))
            options.add("--" + p.name.replace("_", "-"))
    flags = [a for a in argv[2:] if a.startswith("--")]
    assert flags and set(flags) <= options, set(flags) - options
    assert "--out" in flags
    actors = int(argv[argv.index("--actors") + 1])
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert workers["maxReplicas"] * gpus >= actors, "an actor per GPU"
    for word in argv[2:]:
        if "$" in word:  # expanded by emodistill in the driver, not by the submitter's shell
            assert "'" + word + "'" in spec["entrypoint"]

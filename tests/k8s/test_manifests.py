"""The Kubernetes manifests of k8s/ are what KubeRay accepts and what the project runs.

k8s/ is a kustomize tree (k8s/base, k8s/components, k8s/overlays/*): every overlay (and
the base) is rendered with the real `kubectl kustomize`, and

- every rendered document (and k8s/secrets.example.yaml) passes strict schema validation
  (kube_schema.py): Ray CRDs against KubeRay's v1 schemas and the PodMonitor against the
  Prometheus Operator's, vendored in crds/, ConfigMaps and Secrets against schemas of their
  own; negative cases prove a misspelt field, a wrong type or an unknown nested field is
  rejected with its path;
- the rendered manifests agree with the rest of the repository: the one image
  (Dockerfile, pyproject version), Ray's version (constraints.txt), the Secrets they read
  (secrets.example.yaml), the RayService's Serve config (serve_configs/cluster.yaml for
  the GPU overlay), the RayJobs' entrypoints and configs (jobs/), GPUs and CPUs enough for
  those configs;
- an overlay's settings.yaml sets each per-cluster value once: changed there (and the
  image in kustomization.yaml), it changes everywhere in the rendered output.

No Ray and no cluster: a few seconds (kubectl kustomize renders offline).
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import math
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import kube_schema
import vendor_crds

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
TREES = ["base", *(f"overlays/{name}" for name in OVERLAYS)]  # every kustomization that renders
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
COMPONENTS = {"shared", "cluster", "train", "tune", "serve"}
GPU = "nvidia.com/gpu"
KUBECTL = shutil.which("kubectl")


# ---------------------------------------------------------------- helpers


def kustomize(path: Path) -> list[dict]:
    """The documents `kubectl kustomize path` renders."""
    assert KUBECTL, "kubectl (with its built-in kustomize) is needed to render k8s/"
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return kube_schema.load_documents(out.stdout)


@functools.cache
def _rendered(tree: str) -> tuple[dict, ...]:
    return tuple(kustomize(K8S / tree))


def rendered(tree: str) -> list[dict]:
    """A deep copy of the documents of one kustomization (rendered once per session)."""
    return copy.deepcopy(list(_rendered(tree)))


def _pin(name: str) -> str:
    """The version constraints.txt pins for ``name``."""
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert match, f"constraints.txt pins no {name}"
    return match.group(1)


def _docs() -> list[tuple[str, dict]]:
    """(where, document) for every rendered document of every tree, and the Secrets example."""
    docs = [(tree, doc) for tree in TREES for doc in rendered(tree)]
    return docs + [("secrets.example.yaml", d) for d in kube_schema.load_file(K8S / "secrets.example.yaml")]


def _ray_docs(kind: str | None = None, trees=None) -> list[tuple[str, dict]]:
    return [
        (tree, d) for tree in (trees or TREES) for d in rendered(tree)
        if d.get("kind") in RAY_KINDS and kind in (None, d["kind"])
    ]


def _doc_id(item: tuple[str, dict]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


def _cluster_spec(doc: dict) -> dict:
    """The RayCluster spec inside a RayCluster, RayJob or RayService."""
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[doc["kind"]]


def _groups(doc: dict) -> list[tuple[str, dict]]:
    """(name, group) for the head group and every worker group of a Ray document."""
    cluster = _cluster_spec(doc)
    return [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]


def _pod_specs(node, path="") -> list[tuple[str, dict]]:
    """(path, pod spec) for every pod spec (a mapping with `containers`) anywhere in ``node``."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            found.append((path, node))
        for key, value in node.items():
            found += _pod_specs(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _pod_specs(value, f"{path}[{index}]")
    return found


def _containers(doc: dict) -> list[tuple[str, dict]]:
    """(path, container) for every container and init container of a document."""
    return [
        (f"{path}.{field}[{i}]", c)
        for path, spec in _pod_specs(doc)
        for field in ("initContainers", "containers")
        for i, c in enumerate(spec.get(field, []))
    ]


def _find(node, key: str) -> list:
    """Every value of ``key`` anywhere in ``node``."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(node, list):
        for v in node:
            found += _find(v, key)
    return found


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value) -> float:
    """A Kubernetes resource quantity as a number: 500m -> 0.5, 4Gi -> 4 * 2**30."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and (not match.group(2) or match.group(2) in _UNITS), f"unsupported quantity {value!r}"
    return float(match.group(1)) * _UNITS.get(match.group(2), 1)


def _ray_container(group: dict) -> dict:
    """The Ray container of a group's Pod (KubeRay uses the first)."""
    return group["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _workers(doc: dict) -> dict:
    (group,) = _cluster_spec(doc)["workerGroupSpecs"]
    return group


def _limit(group: dict, resource: str) -> float:
    return _quantity(_ray_container(group)["resources"]["limits"].get(resource, 0))


@pytest.fixture(scope="module")
def validator() -> kube_schema.ManifestValidator:
    return kube_schema.ManifestValidator(vendor_crds.load_all())


def _load_render():
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- schema validation


def test_the_trees_render_what_they_should():
    assert {"gpu", "cpu-dev"} <= set(OVERLAYS)
    kinds = {tree: sorted(d["kind"] for d in rendered(tree)) for tree in TREES}
    assert kinds["overlays/gpu"] == ["ConfigMap", "ConfigMap", "PodMonitor", "RayCluster", "RayJob", "RayJob", "RayService"]
    assert kinds["overlays/cpu-dev"] == ["ConfigMap", "RayCluster", "RayJob", "RayService"]
    for tree in TREES:
        assert not [d for d in rendered(tree) if d["kind"] == "ClusterSettings"], "settings are local-config"
        assert not [d for d in rendered(tree) if d["metadata"]["name"] == "emodistill-serve-config"], "local-config"
    assert {p.name for p in K8S.glob("*.yaml")} == {"secrets.example.yaml"}, "manifests live in the kustomize tree"


@pytest.mark.parametrize("tree", [*TREES, "secrets.example.yaml"])
def test_manifests_pass_strict_validation(tree, validator):
    docs = kube_schema.load_file(K8S / tree) if tree.endswith(".yaml") else rendered(tree)
    assert docs, f"{tree} has no documents"
    for doc in docs:
        errors = validator.errors(doc)
        assert not errors, f"{tree} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}:\n  " + "\n  ".join(errors)


def _train_job() -> dict:
    (job,) = [d for d in rendered("overlays/gpu") if d["kind"] == "RayJob" and d["metadata"]["name"] == "emodistill-train"]
    return job


def _head(doc):
    return doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _misspell_shutdown(doc):
    doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")


def _replicas_two(doc):
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"


def _unknown_container_field(doc):
    _head(doc)["imagePullPolcy"] = "Always"


def _unknown_volume_mount_field(doc):
    _head(doc)["volumeMounts"][0]["mountPth"] = "/dev/shm"


def _unknown_metadata_field(doc):
    doc["metadata"]["nmae"] = "x"


def _bad_enum(doc):
    doc["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"


def _float_quantity(doc):
    _head(doc)["resources"]["limits"]["memory"] = 1.5


def _bad_quantity(doc):
    _head(doc)["resources"]["limits"]["cpu"] = "four"


def _missing_container_name(doc):
    del _head(doc)["name"]


def _duplicate_container(doc):
    containers = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    containers.append(copy.deepcopy(containers[0]))


def _int32_overflow(doc):
    doc["spec"]["backoffLimit"] = 2**31


def _wrong_api_version(doc):
    doc["apiVersion"] = "ray.io/v2"


def _env_as_mapping(doc):
    _head(doc)["env"] = {"RAY_AUTH_MODE": "token"}


HEAD = "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]"
NEGATIVE_CASES = [
    (_misspell_shutdown, 'unknown field "spec.shutdownAfterJobFinish"'),
    (_replicas_two, "spec.rayClusterSpec.workerGroupSpecs[0].replicas: 'two' is not of type 'integer'"),
    (_unknown_container_field, f'unknown field "{HEAD}.imagePullPolcy"'),
    (_unknown_volume_mount_field, f'unknown field "{HEAD}.volumeMounts[0].mountPth"'),
    (_unknown_metadata_field, 'unknown field "metadata.nmae"'),
    (_bad_enum, "spec.rayClusterSpec.authOptions.mode: 'password' is not one of ['disabled', 'token']"),
    (_float_quantity, f"{HEAD}.resources.limits.memory: 1.5 must be an integer or a string"),
    (_bad_quantity, f"{HEAD}.resources.limits.cpu: 'four' does not match"),
    (_missing_container_name, f"{HEAD}: 'name' is a required property"),
    (_duplicate_container, "spec.rayClusterSpec.headGroupSpec.template.spec.containers[1]: duplicate entry {'name': 'ray-head'}"),
    (_int32_overflow, "spec.backoffLimit: 2147483648 is not a 'int32'"),
    (_wrong_api_version, "no schema for apiVersion='ray.io/v2' kind='RayJob'"),
    (_env_as_mapping, f"{HEAD}.env: {{'RAY_AUTH_MODE': 'token'}} is not of type 'array'"),
]


@pytest.mark.parametrize("mutate, expected", NEGATIVE_CASES, ids=[f.__name__.strip("_") for f, _ in NEGATIVE_CASES])
def test_validation_rejects_mistakes_naming_the_path(mutate, expected, validator):
    doc = _train_job()
    assert validator.errors(doc) == []
    mutate(doc)
    errors = validator.errors(doc)
    assert any(expected in e for e in errors), f"expected {expected!r} among {errors}"


def test_validation_rejects_bad_secrets_and_unknown_kinds(validator):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert validator.errors(secret) == []
    assert validator.errors({**secret, "stringdata": {"k": "v"}}) == ['unknown field "stringdata"']
    assert validator.errors({k: v for k, v in secret.items() if k != "stringData"}) == ["<root>: a Secret needs data or stringData"]
    assert validator.errors({**secret, "metadata": {}}) == ["metadata: 'name' is a required property"]
    assert validator.errors({**secret, "metadata": {"name": "Not_A_Name"}})[0].startswith("metadata.name: 'Not_A_Name' does not match")
    assert validator.errors({**secret, "data": {"k": "not base64!"}}) == ["data.k: 'not base64!' is not a 'byte'"]
    assert validator.errors({**secret, "stringData": {"a key": "v"}})[0].startswith("stringData: 'a key' does not match")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    assert validator.errors(config_map) == []
    assert validator.errors({**config_map, "data": {"a": 1}}) == ["data.a: 1 is not of type 'string'"]
    assert "no schema for apiVersion='apps/v1' kind='Deployment'" in validator.errors({"apiVersion": "apps/v1", "kind": "Deployment"})[0]


def test_duplicate_yaml_keys_are_rejected():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'kind'"):
        kube_schema.load_documents("apiVersion: v1\nkind: Secret\nkind: ConfigMap\n")
    assert kube_schema.load_documents("---\na: 1\n---\n---\nb: 2\n") == [{"a": 1}, {"b": 2}]


def test_strict_schema_rewrite_follows_kubernetes_rules():
    """The rewrite on a schema using every extension the KubeRay CRDs do (and some they don't)."""
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"x-kubernetes-int-or-string": True},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"n": {"type": "integer"}}},
                    "note": {"type": "string", "nullable": True},
                    "svc": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}},
                    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                },
            }
        },
    }
    validator = kube_schema.KubeValidator(kube_schema.strict_schema(schema), format_checker=kube_schema.FORMATS)

    def errors(spec):
        doc = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"}, "spec": spec}
        return sorted(m for e in validator.iter_errors(doc) for m in kube_schema.describe(e))

    ok = {
        "size": "4Gi",
        "labels": {"any": "key"},
        "free": {"n": 1, "anything": {"goes": True}},
        "note": None,
        "svc": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "b"}}, "spec": {}},
        "tags": ["a", "b"],
    }
    assert errors(ok) == []
    assert errors({"size": 3}) == []
    assert errors({"size": 1.5}) == ["spec.size: 1.5 must be an integer or a string"]
    assert errors({"labels": {"k": 1}}) == ["spec.labels.k: 1 is not of type 'string'"]
    assert errors({"free": {"n": "one"}}) == ["spec.free.n: 'one' is not of type 'integer'"]
    assert errors({"svc": {"metadata": {"nam": "s"}}}) == ['unknown field "spec.svc.metadata.nam"']
    assert errors({"svc": {"spec": {"x": 1}}}) == ['unknown field "spec.svc.spec.x"']
    assert errors({"tags": ["a", "a"]}) == ["spec.tags[1]: duplicate value 'a' (also item 0)"]
    assert errors({"sizes": 1}) == ['unknown field "spec.sizes"']


def test_vendored_schemas_are_small_and_complete():
    for kind in vendor_crds.API_VERSIONS:
        path = vendor_crds.schema_path(kind)
        assert path.stat().st_size < 64 * 1024, f"{path.name} is {path.stat().st_size} bytes"
        schema = vendor_crds.load_vendored(kind)
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    readme = (vendor_crds.OUT_DIR / "README.md").read_text()
    assert "feeaf72facab4881ba2b179248bb67315634e229" in readme and "6adcebc5076c34f4f55f8f5f7b1e528929373ac7" in readme


def _pod_monitor() -> dict:
    (monitor,) = [d for d in rendered("overlays/gpu") if d["kind"] == "PodMonitor"]
    return monitor


def test_pod_monitor_rejects_mistakes(validator):
    monitor = _pod_monitor()
    assert validator.errors(monitor) == []
    monitor["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    monitor["spec"]["selector"]["matchLabel"] = {}
    assert validator.errors(monitor) == [
        'unknown field "spec.podMetricsEndpoints[0].prot"',
        'unknown field "spec.selector.matchLabel"',
    ]


def test_pod_monitor_scrapes_the_metrics_port_of_every_ray_pod():
    """Its selector matches the labels of every Ray Pod template (plus KubeRay's own
    ray.io/is-ray-node), and every Ray container names the port it scrapes."""
    spec = _pod_monitor()["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    kuberay_labels = {"ray.io/is-ray-node": "yes"}  # KubeRay adds it to every Ray Pod
    for tree, doc in _ray_docs(trees=["overlays/gpu"]):
        for group_name, group in _groups(doc):
            labels = {**group["template"].get("metadata", {}).get("labels", {}), **kuberay_labels}
            assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{_doc_id((tree, doc))} {group_name}"
            ports = {p.get("name"): p["containerPort"] for p in _ray_container(group).get("ports", [])}
            assert ports.get(endpoint["port"]) == 8080, f"{_doc_id((tree, doc))} {group_name}: Ray's metrics port"
    assert endpoint["path"] == "/metrics"


@pytest.mark.skipif(not vendor_crds.DEFAULT_CRD_DIR.is_dir(), reason=f"no CRD files at {vendor_crds.DEFAULT_CRD_DIR}")
def test_vendored_schemas_equal_the_shared_crds():
    for kind, schema in vendor_crds.extract_all().items():
        assert vendor_crds.load_vendored(kind) == schema, (
            f"tests/k8s/crds/ is stale for {kind}: run `python tests/k8s/vendor_crds.py`"
        )


# ---------------------------------------------------------------- consistency with the repository


@pytest.mark.parametrize("tree", TREES)
def test_every_container_runs_the_one_project_image(tree):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    docs = _ray_docs(trees=[tree])
    images = {c["image"] for _, d in docs for _, c in _containers(d)}
    images |= {i for _, d in docs for i in _find(d, "image") if isinstance(i, str)}  # e.g. autoscalerOptions
    assert len(images) == 1, f"more than one image in {tree}: {sorted(images)}"
    (image,) = images
    assert image.rsplit(":", 1)[1] == version, f"image {image} is not tagged with the project version {version}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {image} ." in dockerfile
    assert f'org.opencontainers.image.ref.name="{image}"' in dockerfile
    assert f'org.opencontainers.image.version="{version}"' in dockerfile


def test_ray_version_is_the_pinned_one_everywhere():
    ray = _pin("ray")
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert froms == [f"rayproject/ray:{ray}-py311-gpu"], froms
    for tree, doc in _ray_docs():
        assert _cluster_spec(doc)["rayVersion"] == ray, f"{_doc_id((tree, doc))}: rayVersion is not the pinned {ray}"


def test_dockerfile_installs_the_project_pinned_with_cuda_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG TORCH_VERSION={_pin('torch')}" in dockerfile
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in dockerfile
    assert dockerfile.index("torch==${TORCH_VERSION}") < dockerfile.index('pip install --no-cache-dir -c constraints.txt ".[all]"')
    assert "COPY --chown=ray:users . /app" in dockerfile and "WORKDIR /app" in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "runs", ".git", "**/__pycache__"} <= ignored


def test_ray_containers_run_in_the_repository_of_the_image():
    """Entrypoints and configs name paths relative to the repository (/app in the image)."""
    for tree, doc in _ray_docs():
        for group_name, group in _groups(doc):
            assert _ray_container(group).get("workingDir") == "/app", f"{_doc_id((tree, doc))} {group_name}"


def test_every_object_belongs_to_a_workload_that_apply_can_select():
    """`kubectl apply -k OVERLAY -l 'app.kubernetes.io/component in (shared,train)'` picks one workload."""
    for tree in TREES:
        for doc in rendered(tree):
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/name") == "emodistill", _doc_id((tree, doc))
            assert labels.get("app.kubernetes.io/component") in COMPONENTS, _doc_id((tree, doc))
        workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in rendered(tree) if d["kind"] in RAY_KINDS}
        assert len(workloads) == len([d for d in rendered(tree) if d["kind"] in RAY_KINDS]), f"{tree}: one workload per label"


def test_secrets_referenced_by_the_manifests_exist_in_the_example():
    examples = {
        d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {}))
        for d in kube_schema.load_file(K8S / "secrets.example.yaml")
        if d["kind"] == "Secret"
    }
    used: set[str] = set()
    for tree, doc in _ray_docs():
        name = _doc_id((tree, doc))
        refs = [(r["name"], r["key"]) for r in _find(doc, "secretKeyRef")]
        refs += [(name_, "auth_token") for name_ in (o.get("secretName") for o in _find(doc, "authOptions")) if name_]
        refs += [(r["name"], None) for r in _find(doc, "secretRef")]
        for secret, key in refs:
            assert secret in examples, f"{name} reads Secret {secret}, which secrets.example.yaml lacks"
            assert key is None or key in examples[secret], f"{name} reads key {key} of {secret}, which the example lacks"
            used.add(secret)
    assert used == set(examples), f"unused example Secrets: {set(examples) - used}"
    for secret in (r["name"] for _, d in _ray_docs() for r in _find(d, "secretRef")):
        for key in examples[secret]:  # envFrom turns every key into a variable name
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{secret}.{key} is not an environment variable name"


@pytest.mark.parametrize("tree", TREES)
def test_every_ray_container_has_the_auth_token_s3_credentials_and_settings(tree):
    config_maps = {d["metadata"]["name"]: d for d in rendered(tree) if d["kind"] == "ConfigMap"}
    settings = config_maps["emodistill-settings"]["data"]
    assert set(settings) == {"EMODISTILL_DATA_URI", "EMODISTILL_RUNS_URI"}
    for _, doc in _ray_docs(trees=[tree]):
        auth = _cluster_spec(doc)["authOptions"]
        assert auth["mode"] == "token" and auth["secretName"], _doc_id((tree, doc))
        for path, container in _containers(doc):
            env = _env(container)
            assert env["RAY_AUTH_MODE"].get("value") == "token", f"{tree} {path}"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth["secretName"], "key": "auth_token"}
            from_secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            from_maps = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
            assert "emodistill-s3" in from_secrets, f"{tree} {path}: no S3 credentials"
            assert from_maps == ["emodistill-settings"], f"{tree} {path}: no cluster settings (buckets)"


@pytest.mark.parametrize("tree", TREES)
def test_worker_groups_autoscale_beside_a_cpu_head(tree):
    for _, doc in _ray_docs(trees=[tree]):
        name = _doc_id((tree, doc))
        cluster = _cluster_spec(doc)
        assert cluster["enableInTreeAutoscaling"] is True, name
        assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{name}: work would land on the head"
        assert GPU not in _ray_container(cluster["headGroupSpec"])["resources"].get("limits", {}), f"{name}: GPU head"
        group = _workers(doc)
        assert group["groupName"] == "workers"
        assert 0 <= group["minReplicas"] == group["replicas"] <= group["maxReplicas"], name
        if tree != "overlays/cpu-dev":
            assert _limit(group, GPU) >= 1, f"{name}: no GPU workers"
            assert any(t.get("key") == GPU for t in group["template"]["spec"].get("tolerations", [])), f"{name}: no GPU toleration"
            assert "nvidia.com/gpu.product" in group["template"]["spec"].get("nodeSelector", {}) or tree == "base", name
        else:
            assert _limit(group, GPU) == 0, f"{name}: a GPU on the CPU dev cluster"


def test_ray_containers_have_requests_limits_and_shared_memory():
    for tree, doc in _ray_docs():
        for group_name, group in _groups(doc):
            name = f"{_doc_id((tree, doc))} {group_name}"
            pod = group["template"]["spec"]
            container = _ray_container(group)
            resources = container["resources"]
            for res in ("cpu", "memory"):
                assert _quantity(resources["requests"][res]) == _quantity(resources["limits"][res]), (
                    f"{name}: {res} requests != limits (Ray wants Guaranteed Pods)"
                )
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/dev/shm" in mounts, f"{name}: /dev/shm is not mounted"
            volume = next(v for v in pod["volumes"] if v["name"] == mounts["/dev/shm"])
            assert volume["emptyDir"]["medium"] == "Memory", name
            shm = _quantity(volume["emptyDir"]["sizeLimit"])
            assert 0.25 <= shm / _quantity(resources["limits"]["memory"]) <= 0.5, f"{name}: /dev/shm size"


def test_names_are_valid_for_kuberay():
    """DNS-1035 labels within KubeRay's limits (its Services append -head-svc, -serve-svc)."""
    limits = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
    for tree, doc in _ray_docs():
        metadata_name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", metadata_name), f"{tree}: {metadata_name}"
        assert len(metadata_name) <= limits[doc["kind"]], f"{tree}: {metadata_name} is too long"


# ---------------------------------------------------------------- one place for cluster settings


def _settings(overlay: str) -> dict:
    (settings,) = kube_schema.load_file(K8S / "overlays" / overlay / "settings.yaml")
    assert settings["kind"] == "ClusterSettings"
    assert settings["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    return settings["spec"]


WORKLOADS = {"cluster": ("RayCluster", "emodistill-cluster"), "train": ("RayJob", "emodistill-train"),
             "tune": ("RayJob", "emodistill-tune"), "serve": ("RayService", "emodistill")}


def _check_settings_applied(docs: list[dict], settings: dict, where: str) -> None:
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "emodistill-settings")
    assert config_map["data"] == {"EMODISTILL_DATA_URI": settings["dataUri"], "EMODISTILL_RUNS_URI": settings["runsUri"]}, where
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for workload, key in WORKLOADS.items():
        if key not in by_name:
            continue
        doc = by_name[key]
        group = _workers(doc)
        bounds = settings["workers"][workload]
        assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (bounds["min"], bounds["min"], bounds["max"]), (where, workload)
        pod = group["template"]["spec"]
        assert pod["nodeSelector"] == settings["workerNodeSelector"], (where, workload)
        assert _ray_container(group)["resources"] == settings["workerResources"], (where, workload)
        head = _cluster_spec(doc)["headGroupSpec"]
        assert _ray_container(head)["resources"] == settings["headResources"], (where, workload)
        shm = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"]}
        assert shm["dshm"] == settings["workerSharedMemory"], (where, workload)
        head_shm = {v["name"]: v["emptyDir"].get("sizeLimit") for v in head["template"]["spec"]["volumes"]}
        assert head_shm["dshm"] == settings["headSharedMemory"], (where, workload)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_sets_every_cluster_value_in_its_settings(overlay):
    _check_settings_applied(rendered(f"overlays/{overlay}"), _settings(overlay), overlay)


def test_a_value_changed_once_changes_everywhere(tmp_path):
    """Edit the image (kustomization.yaml) and every setting (settings.yaml) of a copy of the
    GPU overlay: the rendered output has the new values everywhere and the old nowhere."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    overlay = tree / "overlays" / "gpu"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["images"] = [{"name": "ghcr.io/emodistill/emodistill", "newName": "registry.example.com/me/emo", "newTag": "7.7.7"}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    document = yaml.safe_load((overlay / "settings.yaml").read_text())
    document["spec"] = settings = {
        "dataUri": "s3://other-data/x", "runsUri": "gs://other-runs",
        "workerNodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "headResources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
        "headSharedMemory": "2500Mi",
        "workerResources": {"requests": {"cpu": "6", "memory": "24Gi"}, "limits": {"cpu": "6", "memory": "24Gi", GPU: 2}},
        "workerSharedMemory": "7Gi",
        "workers": {"cluster": {"min": 1, "max": 3}, "train": {"min": 2, "max": 5}, "tune": {"min": 1, "max": 9}, "serve": {"min": 3, "max": 11}},
    }
    (overlay / "settings.yaml").write_text(yaml.safe_dump(document))
    docs = kustomize(overlay)
    _check_settings_applied(docs, settings, "edited copy")
    text = yaml.safe_dump_all(docs)
    images = {c["image"] for d in docs if d["kind"] in RAY_KINDS for _, c in _containers(d)}
    assert images == {"registry.example.com/me/emo:7.7.7"}
    for old in ("emodistill-data", "emodistill-runs\n", "NVIDIA-A10G", "ghcr.io"):
        assert old not in text, f"{old!r} is still in the rendered output"


# ---------------------------------------------------------------- the RayJobs


@pytest.mark.parametrize("item", _ray_docs("RayJob"), ids=_doc_id)
def test_rayjob_runs_a_job_of_the_repository_and_cleans_up(item):
    name, job = item
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("jobs/") and argv[1].endswith(".py"), argv
    assert (ROOT / argv[1]).is_file(), f"{name}: {argv[1]} does not exist"
    config_path = argv[argv.index("--config") + 1]
    assert (ROOT / config_path).is_file(), f"{name}: {config_path} does not exist"
    config = yaml.safe_load((ROOT / config_path).read_text())
    if argv[1] == "jobs/tune.py":
        assert (ROOT / config["train_config"]).is_file(), f"{config_path}: {config['train_config']} does not exist"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0


def _job_config(job: dict) -> tuple[dict, int]:
    """(the train config a RayJob runs, with its entrypoint's overrides; trainers at once)."""
    from emodistill.config import apply_overrides

    argv = shlex.split(job["spec"]["entrypoint"])
    config_path = argv[argv.index("--config") + 1]
    overrides = [a for a in argv[argv.index("--config") + 2:] if "=" in a and not a.startswith("-")]
    config = apply_overrides(yaml.safe_load((ROOT / config_path).read_text()), overrides)
    concurrent = 1
    if "train_config" in config:  # a sweep: max_concurrent_trials trainers at once
        concurrent = config.get("max_concurrent_trials", 1)
        config = apply_overrides(yaml.safe_load((ROOT / config["train_config"]).read_text()), config.get("train_overrides", []))
    return config, concurrent


@pytest.mark.parametrize("item", _ray_docs("RayJob"), ids=_doc_id)
def test_rayjob_has_workers_enough_for_its_config(item):
    name, job = item
    config, concurrent = _job_config(job)
    scaling = config["scaling"]
    group = _workers(job)
    if scaling.get("use_gpu"):
        gpus = group["maxReplicas"] * _limit(group, GPU)
        assert gpus >= scaling["num_workers"] * concurrent, f"{name}: {gpus} GPUs for {concurrent} x {scaling['num_workers']} workers"
    else:
        assert _limit(group, GPU) == 0, f"{name} runs a CPU config on GPU workers"
        cpus = group["maxReplicas"] * _limit(group, "cpu")
        assert cpus >= scaling["num_workers"] * scaling.get("cpus_per_worker", 1) * concurrent, name
    assert _limit(group, "cpu") >= scaling.get("cpus_per_worker", 1), f"{name}: a worker Pod is smaller than one trainer worker"


@pytest.mark.parametrize("item", _ray_docs("RayJob"), ids=_doc_id)
def test_rayjob_entrypoint_overrides_survive_the_submitter_shell(item):
    """KubeRay runs `ray job submit ... -- <entrypoint>` in a shell of the submitter Pod,
    which has none of the settings: a ${...} must be single-quoted, so that emodistill
    expands it in the driver (on the head, which has them)."""
    name, job = item
    entrypoint = job["spec"]["entrypoint"]
    for word in re.findall(r"'[^']*'|\S+", entrypoint):
        if "$" in word:
            assert word.startswith("'") and word.endswith("'"), f"{name}: {word} would be expanded by the submitter's shell"


@pytest.mark.parametrize("item", _ray_docs("RayJob"), ids=_doc_id)
def test_rayjob_runtime_env_merges_with_the_entrypoints_ray_init(item):
    """Ray refuses (ValueError at ray.init) a job env var that ray.init's runtime_env sets too."""
    name, job = item
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(runtime_env) <= {"env_vars"}, f"{name}: the image has the project; no working_dir/py_modules"
    env_vars = runtime_env.get("env_vars", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()), env_vars
    set_by_init = {
        node.value
        for source in (ROOT / "platform/emodistill/cluster.py", ROOT / "jobs/_bootstrap.py")
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not set(env_vars) & set_by_init, f"{name}: {set(env_vars) & set_by_init} are set by init_ray as well"


# ---------------------------------------------------------------- the RayService


def _service(tree: str) -> dict:
    (service,) = [d for _, d in _ray_docs("RayService", trees=[tree])]
    return service


SERVE_SOURCES = {"base": ROOT / "serve_configs" / "cluster.yaml", "overlays/gpu": ROOT / "serve_configs" / "cluster.yaml",
                 "overlays/cpu-dev": K8S / "overlays" / "cpu-dev" / "serve-config.yaml"}


def test_gpu_rayservice_serves_exactly_serve_configs_cluster_yaml():
    expected = yaml.safe_load((ROOT / "serve_configs" / "cluster.yaml").read_text())
    for tree in ("base", "overlays/gpu"):
        embedded = yaml.safe_load(_service(tree)["spec"]["serveConfigV2"])
        assert embedded == expected, (
            f"{tree}: the RayService's serveConfigV2 differs from serve_configs/cluster.yaml: run `python k8s/render.py`"
        )


@pytest.mark.parametrize("tree", TREES)
def test_rayservice_serve_config_is_valid_and_fits_its_workers(tree, monkeypatch):
    """Ray's own schema and ServeArgs accept it (in the environment the Pods get), and the
    worker group holds what Serve's autoscaling asks for: CPUs and GPUs of every deployment
    at min and at max replicas."""
    from ray.serve.schema import ServeDeploySchema

    from emodistill.serve.config import ServeArgs

    settings = next(d for d in rendered(tree) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "emodistill-settings")
    for key, value in settings["data"].items():
        monkeypatch.setenv(key, value)
    service = _service(tree)
    text = service["spec"]["serveConfigV2"]
    assert yaml.safe_load(text) == yaml.safe_load(SERVE_SOURCES[tree].read_text()), f"{tree}: not its source"
    (app,) = ServeDeploySchema.model_validate(yaml.safe_load(text)).applications
    args = ServeArgs.model_validate(app.args)
    assert args.checkpoint.startswith(settings["data"]["EMODISTILL_RUNS_URI"] + "/"), "the runs bucket of the settings"
    assert args.exits, f"{tree}: name the exits, so that the capacity can be checked"
    group = _workers(service)
    for bound in ("min", "max"):
        cpus = gpus = 0.0
        for options, replicas in [(args.options_for(e), None) for e in args.exits] + [(args.router, args.router.num_replicas)]:
            if replicas is None:
                auto = options.autoscaling
                replicas = (auto.min_replicas if bound == "min" else auto.max_replicas) if auto else options.num_replicas
            cpus += replicas * options.num_cpus
            gpus += replicas * getattr(options, "num_gpus", 0.0)
        pods = group["minReplicas" if bound == "min" else "maxReplicas"]
        assert cpus <= pods * _limit(group, "cpu"), f"{tree}: {cpus} CPUs at {bound} replicas > {pods} workers"
        assert math.ceil(gpus - 1e-9) <= pods * _limit(group, GPU), f"{tree}: {gpus} GPUs at {bound} replicas > {pods} workers"
        if tree == "overlays/cpu-dev":
            assert gpus == 0 and args.device == "cpu"


@pytest.mark.parametrize("tree", TREES)
def test_rayservice_upgrades_without_downtime_and_has_api_keys(tree):
    service = _service(tree)
    spec = service["spec"]
    assert spec["upgradeStrategy"]["type"] in {"NewCluster", "NewClusterWithIncrementalUpgrade"}
    # Deprecated and ignored by KubeRay: their presence would suggest health checks that do not happen.
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(spec)
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    (app,) = serve_config["applications"]
    api_keys_env = app["args"]["api_keys_env"]
    for path, container in _containers(service):
        ref = _env(container)[api_keys_env]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "emodistill-api-keys", "key": api_keys_env}, path
    port = serve_config["http_options"]["port"]
    for group in _cluster_spec(service)["workerGroupSpecs"]:
        ports = {p.get("name"): p["containerPort"] for p in _ray_container(group).get("ports", [])}
        assert ports.get("serve") == port, "KubeRay's serve readiness probe finds the proxy by the port named serve"
        # Custom probes would replace KubeRay's, which include the Serve proxy check.
        assert "readinessProbe" not in _ray_container(group)


def test_generated_files_are_current():
    render = _load_render()
    stale = [str(path.relative_to(ROOT)) for path, text in render.targets().items() if path.read_text() != text]
    assert not stale, f"{stale} are out of date: run `python k8s/render.py`"
    check = subprocess.run(["python", str(K8S / "render.py"), "--check"], capture_output=True, text=True,
                           executable=shutil.which("python") or None)
    assert check.returncode == 0, check.stderr


def test_render_copies_the_serve_config_without_its_header():
    render = _load_render()
    cluster_yaml = (ROOT / "serve_configs" / "cluster.yaml").read_text()
    copy_text = render.render_serve_copy(cluster_yaml)
    assert copy_text.splitlines()[: len(render.HEADER)] == render.HEADER
    assert "yaml-language-server" not in copy_text, "the editor modeline of the source stays there"
    changed = cluster_yaml.replace("realtime: 25", "realtime: 30")
    assert changed != cluster_yaml
    assert yaml.safe_load(render.render_serve_copy(changed)) == yaml.safe_load(changed)
    with pytest.raises(ValueError, match="empty"):
        render.render_serve_copy("# only a comment\n")


def test_k8s_readme_covers_the_tree():
    readme = (K8S / "README.md").read_text()
    for name in [*TREES, "components/settings", "components/monitoring", "settings.yaml", "secrets.example.yaml",
                 "render.py", "dashboard.py", "emodistill-dashboard.json"]:
        assert name in readme, f"k8s/README.md does not mention {name}"
    for needle in ("helm", "emodistill-serve-svc", "X-Latency-Tier: realtime", "Authorization: Bearer",
                   "kubectl apply -k", "app.kubernetes.io/component in (shared,"):
        assert needle in readme, needle

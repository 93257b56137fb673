"""The Kubernetes manifests in k8s/ are what KubeRay accepts and what the project runs.

- Every document of every k8s/*.yaml passes strict schema validation (kube_schema.py):
  Ray CRDs against KubeRay's v1 schemas vendored in crds/, Secrets against a schema of
  their own; negative cases prove a misspelt field, a wrong type or an unknown nested
  field is rejected with its path.
- The manifests agree with the rest of the repository: the one image (Dockerfile,
  pyproject version), Ray's version (constraints.txt), the Secrets they read
  (secrets.example.yaml), the RayService's Serve config (serve_configs/cluster.yaml), the
  RayJobs' entrypoints and configs (jobs/), GPUs enough for those configs.

No Ray and no cluster: a fraction of a second.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

import kube_schema
import vendor_crds

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
EXPECTED_FILES = {
    "ray-cluster.gpu.yaml",
    "ray-job.train.yaml",
    "ray-job.tune.yaml",
    "ray-service.serve.yaml",
    "secrets.example.yaml",
}
GPU = "nvidia.com/gpu"


# ---------------------------------------------------------------- helpers


def _pin(name: str) -> str:
    """The version constraints.txt pins for ``name``."""
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert match, f"constraints.txt pins no {name}"
    return match.group(1)


def _docs() -> list[tuple[str, dict]]:
    """(file name, document) for every document of every manifest."""
    return [(path.name, doc) for path in MANIFESTS for doc in kube_schema.load_file(path)]


def _ray_docs(kind: str | None = None) -> list[tuple[str, dict]]:
    return [(n, d) for n, d in _docs() if d.get("kind") in RAY_KINDS and kind in (None, d["kind"])]


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


@pytest.fixture(scope="module")
def validator() -> kube_schema.ManifestValidator:
    return kube_schema.ManifestValidator({kind: vendor_crds.load_vendored(kind) for kind in RAY_KINDS})


def _load_render():
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- schema validation


def test_the_manifests_are_there():
    assert EXPECTED_FILES <= {p.name for p in MANIFESTS}
    kinds = sorted(d["kind"] for _, d in _docs())
    assert kinds.count("RayJob") >= 2 and {"RayCluster", "RayService", "Secret"} <= set(kinds)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_strict_validation(path, validator):
    docs = kube_schema.load_file(path)
    assert docs, f"{path.name} has no documents"
    for doc in docs:
        errors = validator.errors(doc)
        assert not errors, f"{path.name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}:\n  " + "\n  ".join(errors)


def _train_job() -> dict:
    return copy.deepcopy(kube_schema.load_file(K8S / "ray-job.train.yaml")[0])


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
    for kind in RAY_KINDS:
        path = vendor_crds.schema_path(kind)
        assert path.stat().st_size < 64 * 1024, f"{path.name} is {path.stat().st_size} bytes"
        schema = vendor_crds.load_vendored(kind)
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    assert "feeaf72facab4881ba2b179248bb67315634e229" in (vendor_crds.OUT_DIR / "README.md").read_text()


@pytest.mark.skipif(not vendor_crds.DEFAULT_CRD_DIR.is_dir(), reason=f"no CRD files at {vendor_crds.DEFAULT_CRD_DIR}")
def test_vendored_schemas_equal_the_shared_crds():
    for kind, schema in vendor_crds.extract_all().items():
        assert vendor_crds.load_vendored(kind) == schema, (
            f"tests/k8s/crds/ is stale for {kind}: run `python tests/k8s/vendor_crds.py`"
        )


# ---------------------------------------------------------------- consistency with the repository


def test_every_container_runs_the_one_project_image():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for _, d in _ray_docs() for _, c in _containers(d)}
    images |= {i for _, d in _ray_docs() for i in _find(d, "image") if isinstance(i, str)}  # e.g. autoscalerOptions
    assert len(images) == 1, f"more than one image in k8s/: {sorted(images)}"
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
    for name, doc in _ray_docs():
        assert _cluster_spec(doc)["rayVersion"] == ray, f"{name}: rayVersion is not the pinned {ray}"


def test_dockerfile_installs_the_project_pinned_with_cuda_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG TORCH_VERSION={_pin('torch')}" in dockerfile
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in dockerfile
    assert dockerfile.index("torch==${TORCH_VERSION}") < dockerfile.index("pip install --no-cache-dir -c constraints.txt .")
    assert "COPY --chown=ray:users . /app" in dockerfile and "WORKDIR /app" in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "runs", ".git", "**/__pycache__"} <= ignored


def test_ray_containers_run_in_the_repository_of_the_image():
    """Entrypoints and configs name paths relative to the repository (/app in the image)."""
    for name, doc in _ray_docs():
        for group_name, group in _groups(doc):
            assert _ray_container(group).get("workingDir") == "/app", f"{name} {group_name}"


def test_secrets_referenced_by_the_manifests_exist_in_the_example():
    examples = {
        d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {}))
        for d in kube_schema.load_file(K8S / "secrets.example.yaml")
        if d["kind"] == "Secret"
    }
    used: set[str] = set()
    for name, doc in _ray_docs():
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


def test_every_ray_container_has_the_auth_token_and_s3_credentials():
    for name, doc in _ray_docs():
        auth = _cluster_spec(doc)["authOptions"]
        assert auth["mode"] == "token" and auth["secretName"], name
        for path, container in _containers(doc):
            env = _env(container)
            assert env["RAY_AUTH_MODE"].get("value") == "token", f"{name} {path}"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth["secretName"], "key": "auth_token"}
            from_secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert "emodistill-s3" in from_secrets, f"{name} {path}: no S3 credentials"


def test_gpu_worker_groups_autoscale_with_gpu_limits_and_a_cpu_head():
    for name, doc in _ray_docs():
        cluster = _cluster_spec(doc)
        assert cluster["enableInTreeAutoscaling"] is True, name
        assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{name}: work would land on the head"
        assert GPU not in _ray_container(cluster["headGroupSpec"])["resources"].get("limits", {}), f"{name}: GPU head"
        gpu_groups = [g for g in cluster["workerGroupSpecs"] if _quantity(_ray_container(g)["resources"]["limits"].get(GPU, 0)) >= 1]
        assert gpu_groups, f"{name} has no GPU worker group"
        for group in cluster["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"], name
        for group in gpu_groups:
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == GPU for t in tolerations), f"{name} {group['groupName']}: no GPU toleration"


def test_ray_containers_have_requests_limits_and_shared_memory():
    for name, doc in _ray_docs():
        for group_name, group in _groups(doc):
            pod = group["template"]["spec"]
            container = _ray_container(group)
            resources = container["resources"]
            for res in ("cpu", "memory"):
                assert _quantity(resources["requests"][res]) == _quantity(resources["limits"][res]), (
                    f"{name} {group_name}: {res} requests != limits (Ray wants Guaranteed Pods)"
                )
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/dev/shm" in mounts, f"{name} {group_name}: /dev/shm is not mounted"
            volume = next(v for v in pod["volumes"] if v["name"] == mounts["/dev/shm"])
            assert volume["emptyDir"]["medium"] == "Memory", f"{name} {group_name}"
            shm = _quantity(volume["emptyDir"]["sizeLimit"])
            assert 0.25 <= shm / _quantity(resources["limits"]["memory"]) <= 0.5, f"{name} {group_name}: /dev/shm size"


def test_names_are_valid_for_kuberay():
    """DNS-1035 labels within KubeRay's limits (its Services append -head-svc, -serve-svc)."""
    limits = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
    for name, doc in _ray_docs():
        metadata_name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", metadata_name), f"{name}: {metadata_name}"
        assert len(metadata_name) <= limits[doc["kind"]], f"{name}: {metadata_name} is too long"


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


@pytest.mark.parametrize("item", _ray_docs("RayJob"), ids=_doc_id)
def test_rayjob_has_gpus_enough_for_its_config(item):
    name, job = item
    argv = shlex.split(job["spec"]["entrypoint"])
    config = yaml.safe_load((ROOT / argv[argv.index("--config") + 1]).read_text())
    concurrent = 1
    if "train_config" in config:  # a sweep: max_concurrent_trials trainers at once
        concurrent = config.get("max_concurrent_trials", 1)
        config = yaml.safe_load((ROOT / config["train_config"]).read_text())
    scaling = config["scaling"]
    assert scaling["use_gpu"], f"{name} runs a CPU config on a GPU cluster"
    gpus = sum(
        g["maxReplicas"] * _quantity(_ray_container(g)["resources"]["limits"].get(GPU, 0))
        for g in _cluster_spec(job)["workerGroupSpecs"]
    )
    assert gpus >= scaling["num_workers"] * concurrent, f"{name}: {gpus} GPUs for {concurrent} x {scaling['num_workers']} workers"
    cpus = _quantity(_ray_container(_cluster_spec(job)["workerGroupSpecs"][0])["resources"]["limits"]["cpu"])
    assert cpus >= scaling.get("cpus_per_worker", 1), f"{name}: a worker Pod is smaller than one trainer worker"


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


def _service() -> dict:
    (service,) = [d for _, d in _ray_docs("RayService")]
    return service


def test_rayservice_serves_exactly_serve_configs_cluster_yaml():
    embedded = yaml.safe_load(_service()["spec"]["serveConfigV2"])
    expected = yaml.safe_load((ROOT / "serve_configs" / "cluster.yaml").read_text())
    assert embedded == expected, (
        "k8s/ray-service.serve.yaml's serveConfigV2 differs from serve_configs/cluster.yaml: run `python k8s/render.py`"
    )


def test_rayservice_upgrades_without_downtime_and_has_api_keys():
    service = _service()
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


def test_render_regenerates_only_the_serve_config_block(tmp_path):
    render = _load_render()
    manifest = (K8S / "ray-service.serve.yaml").read_text()
    cluster_yaml = (ROOT / "serve_configs" / "cluster.yaml").read_text()
    assert render.render(render.render(manifest, cluster_yaml), cluster_yaml) == render.render(manifest, cluster_yaml)
    changed = cluster_yaml.replace("realtime: 25", "realtime: 30")
    assert changed != cluster_yaml
    out = render.render(manifest, changed)
    (new_service,) = [d for d in kube_schema.load_documents(out) if d["kind"] == "RayService"]
    assert yaml.safe_load(new_service["spec"]["serveConfigV2"]) == yaml.safe_load(changed)
    old = _service()
    new_service["spec"].pop("serveConfigV2")
    old["spec"].pop("serveConfigV2")
    assert new_service == old, "render changed more than serveConfigV2"
    assert out.splitlines()[:10] == manifest.splitlines()[:10]  # the comments above stay
    with pytest.raises(ValueError, match="serveConfigV2"):
        render.render("kind: RayService\nspec: {}\n", cluster_yaml)


def test_k8s_readme_covers_every_manifest():
    readme = (K8S / "README.md").read_text()
    for path in MANIFESTS:
        assert path.name in readme, f"k8s/README.md does not mention {path.name}"
    for needle in ("helm", "render.py", "emodistill-serve-svc", "X-Latency-Tier: realtime", "Authorization: Bearer"):
        assert needle in readme, needle

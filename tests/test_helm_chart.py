"""The Helm chart (helm/tts), linted and rendered by the real Helm engine, then checked object by object."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from serve_app.ray_system import ray_env
from tests.k8s.render import CHART_DIR, REPO, VALUE_SETS, HelmFailure, deep_merge, effective_values, lint
from tests.k8s.render import render_objects as _render_objects

K8S_VERSION = "1.32"  # pinned Kubernetes API version the manifests are validated against
KUBERAY_VERSION = "1.7.0"
CRD_SCHEMA = Path(__file__).parent / "k8s" / "data" / f"kuberay-{KUBERAY_VERSION}-rayservice-v1.schema.json"
SOURCE_CONFIG = REPO / "serve_app" / "config" / "local.yaml"
STAGES = ("TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder")
# Kinds validated by a CRD schema or structurally instead of kubernetes-validate (not built into Kubernetes).
CUSTOM_KINDS = {"RayService", "PodMonitor", "Gslb", "HTTPRoute"}


@cache
def rendered(value_set: str) -> tuple[dict[str, Any], ...]:
    return tuple(_render_objects(value_set))


def by_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def rayservice(value_set: str) -> dict[str, Any]:
    (rs,) = by_kind(rendered(value_set), "RayService")
    return rs


def serve_config(value_set: str) -> dict[str, Any]:
    return yaml.safe_load(rayservice(value_set)["spec"]["serveConfigV2"])


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_passes(value_set: str) -> None:
    lint(value_set)


def test_helm_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = tmp_path / "tts"
    shutil.copytree(CHART_DIR, chart, symlinks=False)
    (chart / "templates" / "broken.yaml").write_text("{{ if }}\n")
    with pytest.raises(HelmFailure, match=r"templates/"):
        lint("default", chart)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_builtin_objects_validate_strict(value_set: str) -> None:
    objs = rendered(value_set)
    assert objs, "nothing rendered"
    for obj in objs:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """CRD structural schema -> JSON schema that also rejects unknown fields (like the API server's pruning
    would silently drop them)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _rayservice_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_strict(json.loads(CRD_SCHEMA.read_text())))


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rayservice_matches_kuberay_crd_schema(value_set: str) -> None:
    rs = rayservice(value_set)
    assert rs["apiVersion"] == "ray.io/v1"
    errors = sorted(_rayservice_validator().iter_errors(rs), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_crd_validator_rejects_unknown_and_mistyped_fields() -> None:
    rs = copy.deepcopy(rayservice("default"))
    rs["spec"]["rayClusterSpec"] = {}  # the doc typo for rayClusterConfig
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "ten"
    messages = [e.message for e in _rayservice_validator().iter_errors(rs)]
    assert any("rayClusterSpec" in m for m in messages)
    assert any("'ten'" in m for m in messages)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_custom_resources_are_well_formed(value_set: str) -> None:
    for obj in rendered(value_set):
        if obj["kind"] == "PodMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            (endpoint,) = obj["spec"]["podMetricsEndpoints"]
            assert endpoint["port"] == "metrics"
            assert obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ray"
        if obj["kind"] == "Gslb":
            assert obj["apiVersion"] in ("k8gb.io/v1beta1", "k8gb.absa.oss/v1beta1")
            assert obj["spec"]["strategy"]["type"] == "failover"
            assert obj["spec"]["strategy"]["primaryGeoTag"]
            ingresses = [o["metadata"]["name"] for o in by_kind(rendered(value_set), "Ingress")]
            assert obj["spec"]["resourceRef"]["name"] in ingresses


def test_ray_version_matches_installed_ray_and_chart_pins() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["annotations"]["kuberay.operator/version"] == KUBERAY_VERSION
    assert chart["annotations"]["ray/version"] == ray.__version__
    for value_set in VALUE_SETS:
        assert rayservice(value_set)["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
        assert effective_values(value_set)["kuberay"]["operatorVersion"] == KUBERAY_VERSION


def test_chart_serve_config_is_the_local_config() -> None:
    """One source of truth: the chart's Serve config file is serve_app/config/local.yaml (a symlink)."""
    chart_file = CHART_DIR / "files" / "serve-config.yaml"
    assert chart_file.is_symlink(), "helm/tts/files/serve-config.yaml must stay a symlink to the local config"
    assert chart_file.resolve() == SOURCE_CONFIG.resolve()


def _expected_serve_config(value_set: str) -> dict[str, Any]:
    values = effective_values(value_set)
    src = yaml.safe_load(SOURCE_CONFIG.read_text())
    out = copy.deepcopy(src)
    out["proxy_location"] = values["serve"]["proxyLocation"]
    out["http_options"] = deep_merge(src.get("http_options") or {}, values["serve"]["httpOptions"])
    for app in out["applications"]:
        app["args"] = deep_merge(app.get("args") or {}, values["serve"]["appArgs"])
        app["deployments"] = [
            deep_merge(d, values["serve"]["deployments"].get(d["name"], {})) for d in app["deployments"]
        ]
    return out


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_serve_config_is_source_plus_declared_overrides(value_set: str) -> None:
    assert serve_config(value_set) == _expected_serve_config(value_set)


def test_override_of_unknown_deployment_fails_render() -> None:
    with pytest.raises(HelmFailure, match="NoSuchStage"):
        _render_objects("default", {"serve": {"deployments": {"NoSuchStage": {"max_replicas_per_node": 1}}}})


def test_values_schema_rejects_bad_values() -> None:
    with pytest.raises(HelmFailure, match="role"):
        _render_objects("default", {"role": "leader"})


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_serve_config_is_valid_for_ray_serve(value_set: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config(value_set))
    (app,) = schema.applications
    assert app.name == "tts"
    assert app.import_path == "serve_app.graph:build_app"
    assert {d.name for d in app.deployments} == set(STAGES)


def test_serve_config_names_exist_in_code(tiny_model_dir: Path) -> None:
    """import_path resolves to the app builder and every configured deployment is built by it."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    cfg = serve_config("primary")
    (app_cfg,) = cfg["applications"]
    builder = import_attr(app_cfg["import_path"])
    args = dict(app_cfg["args"])
    # The pods' /models path does not exist here: build against the session's tiny model directory.
    args["model_dir"] = str(tiny_model_dir)
    app = call_user_app_builder_with_args_if_necessary(builder, args)
    built = build_app(app, name=app_cfg["name"])
    names = {d.name for d in built.deployments}
    assert {d["name"] for d in app_cfg["deployments"]} <= names
    assert built.ingress_deployment_name == "TTSIngress"


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            key = (v.get("name") or v.get("groupName") or i) if isinstance(v, dict) else i
            out.update(_flatten(v, f"{prefix}[{key}]"))
        return out
    return {prefix: obj}


def _comparable(value_set: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for obj in rendered(value_set):
        obj = copy.deepcopy(obj)
        if obj["kind"] == "RayService":
            obj["spec"]["serveConfigV2"] = yaml.safe_load(obj["spec"]["serveConfigV2"])
        flat.update(_flatten(obj, f"{obj['kind']}/{obj['metadata']['name']}"))
    return flat


# Where the standby may differ from the primary: its role label, the api key the chart generated, and the
# *minimum* capacity (Serve min/initial replicas, worker-group min/initial pods). Ceilings stay equal.
INTENDED_STANDBY_DIFF = [
    r".*\.labels\.tts\.example\.com/role$",
    r"^Secret/tts-api-keys\.data\.api-keys$",
    r"^PodMonitor/.*relabelings\[1\]\.replacement$",
    r"^RayService/tts\.spec\.serveConfigV2\.applications\[tts\]\.deployments\[\w+\]\.autoscaling_config\."
    r"(min_replicas|initial_replicas)$",
    r"^RayService/tts\.spec\.rayClusterConfig\.workerGroupSpecs\[cpu\]\.(minReplicas|replicas)$",
]


def test_standby_differs_from_primary_only_where_intended() -> None:
    primary, standby = _comparable("primary"), _comparable("standby")
    assert primary.keys() == standby.keys(), primary.keys() ^ standby.keys()
    diff = sorted(k for k in primary if primary[k] != standby[k])
    unexpected = [k for k in diff if not any(re.match(p, k) for p in INTENDED_STANDBY_DIFF)]
    assert not unexpected, unexpected
    assert any("min_replicas" in k for k in diff), "standby should run fewer minimum replicas"


def test_standby_is_hot_with_the_same_ceiling() -> None:
    p, s = serve_config("primary"), serve_config("standby")
    for dp, ds in zip(p["applications"][0]["deployments"], s["applications"][0]["deployments"], strict=True):
        assert ds["autoscaling_config"]["min_replicas"] >= 1, f"{ds['name']}: standby must keep models loaded"
        assert ds["autoscaling_config"]["max_replicas"] == dp["autoscaling_config"]["max_replicas"]
    wp = rayservice("primary")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    ws = rayservice("standby")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["maxReplicas"] for g in wp] == [g["maxReplicas"] for g in ws]
    assert all(g["minReplicas"] >= 1 for g in ws)


@pytest.mark.parametrize("value_set", ["default", "primary"])
def test_in_cluster_ha_and_capacity_invariants(value_set: str) -> None:
    rs = rayservice(value_set)
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["version"] == "v2"
    gcs = cluster["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] and "secretKeyRef" in gcs["redisPassword"]["valueFrom"]
    assert rs["spec"]["excludeHeadPodFromServeSvc"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] >= 2 and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pod = group["template"]["spec"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    worker = pod["containers"][0]
    assert "-/healthz" in " ".join(worker["readinessProbe"]["exec"]["command"])
    assert worker["livenessProbe"]["httpGet"]["path"] == "/api/healthz"
    slice_cpus = 0.0
    for dep in serve_config(value_set)["applications"][0]["deployments"]:
        auto = dep["autoscaling_config"]
        assert auto["min_replicas"] >= 2, f"{dep['name']}: >= 2 replicas for HA"
        assert dep["max_replicas_per_node"] == 1, f"{dep['name']}: replicas must spread over nodes"
        # max_replicas_per_node 1 => the ceiling needs as many worker pods
        assert auto["max_replicas"] <= group["maxReplicas"] * dep["max_replicas_per_node"]
        slice_cpus += dep["ray_actor_options"]["num_cpus"]
    assert slice_cpus <= float(group["rayStartParams"]["num-cpus"]), "one replica per stage must fit a pod"
    # torch threads per replica never exceed the CPUs Ray reserves for it
    (app,) = serve_config(value_set)["applications"]
    cpus = {d["name"]: d["ray_actor_options"]["num_cpus"] for d in app["deployments"]}
    stage_of = {"frontend": "TextFrontend", "acoustic": "SambertAcoustic", "vocoder": "HifiGanVocoder"}
    for key, threads in app["args"]["threads"].items():
        assert threads <= max(1, cpus[stage_of[key]]), f"{key}: {threads} threads > num_cpus"
    resources = pod["containers"][0]["resources"]
    assert float(resources["limits"]["cpu"]) == float(group["rayStartParams"]["num-cpus"])
    pdbs = {o["metadata"]["name"]: o for o in by_kind(rendered(value_set), "PodDisruptionBudget")}
    assert pdbs["tts-ray-workers"]["spec"]["selector"]["matchLabels"]["tts.example.com/ray-node"] == "worker"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_ray_pods_run_the_serving_ray_system_config(value_set: str) -> None:
    """Every Ray container (head and workers) gets serve_app/ray_system.py's settings as RAY_<name> variables:
    the cluster the chart deploys is the one make run, the benchmarks and the tests measure."""
    cluster = rayservice(value_set)["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    containers = [c for pod in pods for c in pod["template"]["spec"]["containers"]]
    assert len(containers) >= 2
    for container in containers:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert ray_env().items() <= env.items(), container["name"]


def test_network_policy_limits_serve_and_ray_ports() -> None:
    pol = next(o for o in rendered("primary") if o["metadata"]["name"] == "tts-ray")
    rules = pol["spec"]["ingress"]
    # Rule 0: any port, but only from this release's Ray pods.
    assert "ports" not in rules[0]
    assert rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "tts"
    # Every other rule names its ports, and only serve/metrics/dashboard/agent ports are opened.
    opened = {p["port"] for r in rules[1:] for p in r["ports"]}
    assert opened <= {8000, 8080, 8265, 52365}
    serve_rule = rules[1]
    assert [p["port"] for p in serve_rule["ports"]] == [8000]
    assert any("podSelector" in peer for peer in serve_rule["from"]), "the gateway may reach port 8000"


def test_pod_templates_do_not_carry_chart_version() -> None:
    """A chart-only upgrade must not change rayClusterConfig (else KubeRay builds a new cluster)."""
    cluster = rayservice("primary")["spec"]["rayClusterConfig"]
    for tpl in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        assert "helm.sh/chart" not in tpl["metadata"]["labels"]
        assert "app.kubernetes.io/version" not in tpl["metadata"]["labels"]


def test_grafana_dashboard_uses_metrics_the_app_exports() -> None:
    (cm,) = [o for o in rendered("default") if o["metadata"]["name"].endswith("-dashboard")]
    dashboard = json.loads(cm["data"]["tts-pipeline.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"ray_(tts_[a-z_]+?)(?:_bucket|_sum|_count|_total)?[{\[]", exprs))
    assert used, "dashboard shows no pipeline metrics"
    source = (REPO / "deployments" / "metrics.py").read_text()
    defined = set(re.findall(r'"(tts_[a-z_]+)"', source))
    assert used <= defined, f"dashboard metrics not defined in deployments/metrics.py: {used - defined}"


def nginx_conf(value_set: str = "primary", extra: dict[str, Any] | None = None) -> str:
    objs = _render_objects(value_set, extra) if extra else rendered(value_set)
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-gateway")]
    return cm["data"]["nginx.conf"]


def test_gateway_config_has_backup_and_idempotent_retries() -> None:
    conf = nginx_conf()
    # The primary three times (a synthesis that hit a dying ingress replica is replayed on the same
    # cluster first; a node loss can reset two attempts), then the standby; tries cover every slot.
    primary = re.findall(r"server tts-primary\.example\.com:443 max_fails=3 fail_timeout=10s;", conf)
    assert len(primary) == 3, conf
    assert re.search(r"server tts-standby\.example\.com:443 backup ", conf)
    assert conf.index("tts-primary") < conf.index("tts-standby")
    assert int(re.search(r"proxy_next_upstream_tries (\d+);", conf).group(1)) > len(primary)
    synth = conf[conf.index("location ~ ^(/api/tts|/tts|/v1/audio/speech)$") :]
    synth = synth[: synth.index("}")]
    for cond in ("non_idempotent", "error", "timeout", "http_500", "http_503", "http_404"):
        assert cond in synth, cond
    rest = conf[conf.index("location / {") :]
    assert "non_idempotent" not in rest[: rest.index("}")]


def test_gateway_rejects_tries_that_never_reach_the_standby() -> None:
    with pytest.raises(HelmFailure, match="nextUpstreamTries must exceed"):
        nginx_conf(extra={"gateway": {"primaryAttempts": 4, "nextUpstreamTries": 4}})


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing: apt-get install -y nginx")
def test_gateway_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = nginx_conf(extra={"gateway": {"scheme": "http"}}).replace("/tmp/", f"{tmp_path}/")
    # Upstream names need DNS: check with loopback addresses.
    conf = re.sub(r"server \S+\.example\.com:443", "server 127.0.0.1:1", conf)
    (tmp_path / "nginx.conf").write_text(conf)
    proc = subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "err.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("value_set", ["default", "standby"])
def test_api_key_secret_is_accepted_by_the_ingress_auth(value_set: str) -> None:
    """The chart turns auth on and its generated Secret parses with the app's own key loader."""
    import base64

    from serve_app.security.auth import ENV_AUTH_ENABLED, ENV_KEYS, load_keys

    objs = rendered(value_set)
    (secret,) = [o for o in by_kind(objs, "Secret") if "api-keys" in o.get("data", {})]
    keys = load_keys(inline=base64.b64decode(secret["data"]["api-keys"]).decode())
    assert list(keys) == ["default"] and len(keys["default"]) >= 16
    env = {e["name"]: e for e in _flatten_env(rayservice(value_set))}
    assert env[ENV_AUTH_ENABLED]["value"] == "1"
    assert env[ENV_KEYS]["valueFrom"]["secretKeyRef"]["key"] == "api-keys"


def _flatten_env(rs: dict[str, Any]) -> list[dict[str, Any]]:
    spec = rs["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [e for g in groups for c in g["template"]["spec"]["containers"] for e in c.get("env", [])]

"""The Helm chart (deploy/helm/llmobs): rendered and linted by Helm's own engine (helm-python-sdk, Helm v4),
every object validated offline against the Kubernetes API's schemas (strict: unknown fields are errors,
as `kubectl apply --validate=strict` makes them) and the Prometheus Operator's CRD schemas, the rules
checked by promtool, and the workloads' flags parsed by the exporter's and load generator's own parsers.
No cluster runs here; what a cluster would add (admission, the operator's reconciliation) is not tested.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.chart import NAMESPACE, RELEASE, Rendered, render
from tests.support.real import require_binary

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).with_name("crds")
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
BCRYPT_HASH = "$2b$04$x/W0Lj0tPr/vsxdN0G0aXuMM6/btMWj0V3bdBjTZ65obep1uebzza"  # of "secret", cost 4

OPERATOR = {
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
}
TLS = {
    **OPERATOR,
    "webConfig": {
        "tls": {"enabled": True, "secretName": "exporter-tls", "clientCASecretName": "scraper-ca"},
        "basicAuth": {"enabled": True, "users": {"prometheus": BCRYPT_HASH}},
    },
    "serviceMonitor": {
        "enabled": True,
        "tlsConfig": {"ca": {"secret": {"name": "exporter-tls", "key": "ca.crt"}}, "serverName": "exporter"},
        "basicAuth": {
            "username": {"name": "scrape-auth", "key": "username"},
            "password": {"name": "scrape-auth", "key": "password"},
        },
    },
    "networkPolicy": {
        "enabled": True,
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    },
}
JOB = {
    "podMonitor": {"enabled": True},
    "service": {"enabled": False},
    "loadgen": {
        "job": {
            "enabled": True,
            "url": "http://vllm.serving:8000",
            "shards": 4,
            "runId": "sweep-1",
            "startAt": "2026-12-05T12:00:00Z",
            "apiKeySecret": {"name": "engine-key"},
            "reportsClaim": "loadgen-reports",
            "args": ["--concurrency=8", "--step-duration=30s"],
        },
        "serve": {
            "enabled": True,
            "tokenSecret": {"name": "loadgen-token"},
            "allowUrls": ["http://vllm.serving:8000"],
        },
        "podMonitor": {"enabled": True},
    },
}
MINIMAL = {
    "engineDiscovery": {"enabled": False},
    "podResources": {"enabled": False},
    "rbac": {"create": False},
    "dashboards": {"enabled": False},
    "scrapeAnnotations": False,
    "exporter": {
        "hostNetwork": True,
        "runtimeClassName": "",
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
        "config": {"targets": [{"name": "external", "url": "http://10.0.0.5:8000", "kind": "vllm"}]},
        "extraArgs": ["--log-level=debug"],
    },
}
CASES = {"defaults": {}, "operator": OPERATOR, "tls": TLS, "job": JOB, "minimal": MINIMAL}
# Values no user can put a character in that YAML reads otherwise ('#' starts a comment, ': ' a map).
AWKWARD = {
    "loadgen": {
        "job": {"enabled": True, "url": "http://vllm:8000/v1 #frag", "runId": "a: b #c", "startAt": "x: y"},
        "serve": {"enabled": True, "tokenSecret": {"name": "t"}, "allowUrls": ["http://x:1/ #y"]},
    }
}
CASES = {**CASES, "awkward": AWKWARD}
FAILING = {
    "job-without-url": {"loadgen": {"job": {"enabled": True}}},
    "tls-without-secret": {"webConfig": {"tls": {"enabled": True}}},
    "serve-without-token": {"loadgen": {"serve": {"enabled": True}}},
    # each below rendered, and deployed something wrong
    "both-monitors": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "default-service-account": {"serviceAccount": {"create": False}},
    "no-shards": {"loadgen": {"job": {"enabled": True, "url": "http://v:8000", "shards": 0}}},
    "plain-password": {"webConfig": {"basicAuth": {"enabled": True, "users": {"prom": "hunter2"}}}},
    "no-users": {"webConfig": {"basicAuth": {"enabled": True}}},
}


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return render({**CASES, **FAILING})


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_renders_and_lints_clean(rendered: dict[str, Rendered], case: str) -> None:
    result = rendered[case]
    assert result.error is None, result.error
    assert result.lint["errors"] == []
    serious = [m for m in result.lint["messages"] if m["severity"] >= 2]  # warnings and errors
    assert serious == []


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_matches_the_kubernetes_schemas(rendered: dict[str, Rendered], case: str) -> None:
    assert rendered[case].invalid == []
    assert rendered[case].objects


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_objects_match_their_crds(rendered: dict[str, Rendered], case: str) -> None:
    for document in rendered[case].objects:
        if document["kind"] in OPERATOR_KINDS:
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            validator(document["kind"]).validate(document)


@pytest.mark.real
def test_crd_validation_catches_a_misspelt_field(rendered: dict[str, Rendered]) -> None:
    monitor = json.loads(json.dumps(rendered["operator"].get("ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(jsonschema.ValidationError):
        validator("ServiceMonitor").validate(monitor)


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(FAILING))
def test_missing_required_values_fail_with_their_name(rendered: dict[str, Rendered], case: str) -> None:
    error = rendered[case].error or ""
    key = {"job-without-url": "loadgen.job.url", "tls-without-secret": "webConfig.tls.secretName",
           "serve-without-token": "loadgen.serve.tokenSecret.name",
           "both-monitors": "podMonitor.enabled", "default-service-account": "serviceAccount.name",
           "no-shards": "loadgen.job.shards", "plain-password": "webConfig.basicAuth.users.prom",
           "no-users": "webConfig.basicAuth.users"}[case]  # fmt: skip
    assert key in error and "hunter2" not in error


@pytest.mark.real
def test_awkward_values_reach_the_arguments_whole(rendered: dict[str, Rendered]) -> None:
    """`--url=http://vllm:8000/v1 #frag` was cut at the '#' (a YAML comment), `--run-id=a: b` became a map."""
    result = rendered["awkward"]
    job = result.get("Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--url=http://vllm:8000/v1 #frag", "--run-id=a: b #c", "--start-at=x: y"} <= set(job)
    serve = result.get("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-url=http://x:1/ #y" in serve


@pytest.mark.real
def test_defaults_run_the_exporter_on_gpu_nodes_without_the_operator(rendered: dict[str, Rendered]) -> None:
    result = rendered["defaults"]
    assert result.kinds() == sorted(
        ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Service", "ServiceAccount"] + ["ConfigMap"] * 4
    )
    pod = result.get("DaemonSet")["spec"]["template"]
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["hostPID"] is True and spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["EXPORTER_KUBERNETES_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9840"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["pod-resources"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"


@pytest.mark.real
def test_rbac_grants_reading_pods_only(rendered: dict[str, Rendered]) -> None:
    result = rendered["defaults"]
    assert result.get("ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = result.get("ClusterRoleBinding")
    account = result.get("ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = result.get("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    minimal = rendered["minimal"]
    assert "ClusterRole" not in minimal.kinds()
    assert minimal.get("DaemonSet")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.real
def test_service_monitor_selects_the_service_and_names_the_job(rendered: dict[str, Rendered]) -> None:
    result = rendered["operator"]
    monitor, service = result.get("ServiceMonitor"), result.get("Service")
    pod = result.get("DaemonSet")["spec"]["template"]
    labels = service["metadata"]["labels"]
    assert all(labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert labels[monitor["spec"]["jobLabel"]] == "llmobs-exporter"  # the job the alerts name
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["honorLabels"] is True and endpoint["scheme"] == "http"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "prometheus.io/scrape" not in pod["metadata"].get("annotations", {})  # no double scrape


@pytest.mark.real
def test_pod_monitors_name_their_jobs(rendered: dict[str, Rendered]) -> None:
    result = rendered["job"]
    exporter, loadgen = result.get("PodMonitor", "-exporter"), result.get("PodMonitor", "-loadgen")
    pod = result.get("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert pod[exporter["spec"]["jobLabel"]] == "llmobs-exporter"
    for workload in (result.get("Job"), result.get("Deployment")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels[loadgen["spec"]["jobLabel"]] == "llmobs-loadgen"
        ports = [p["name"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]]
        assert loadgen["spec"]["podMetricsEndpoints"][0]["port"] in ports
    services = [o["metadata"]["name"] for o in result.objects if o["kind"] == "Service"]
    assert services == [f"{RELEASE}-llmobs-loadgen-api"]  # service.enabled=false: no exporter Service


@pytest.mark.real
def test_tls_and_basic_auth(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    result = rendered["tls"]
    pod = result.get("DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--web-config-file=/etc/llmobs/web/web-config.yml" in container["args"]
    assert container["livenessProbe"] == {"tcpSocket": {"port": "metrics"}, "periodSeconds": 20}
    secret = result.get("Secret", "-exporter-web")
    web = yaml.safe_load(secret["stringData"]["web-config.yml"])
    assert web == {
        "tls_server_config": {
            "cert_file": "/etc/llmobs/tls/tls.crt",
            "key_file": "/etc/llmobs/tls/tls.key",
            "client_ca_file": "/etc/llmobs/client-ca/ca.crt",
            "client_auth_type": "RequireAndVerifyClientCert",
        },
        "basic_auth_users": {"prometheus": BCRYPT_HASH},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["tls"]["secret"]["secretName"] == "exporter-tls" and mounts["tls"] == "/etc/llmobs/tls"
    assert volumes["web-config"]["secret"]["secretName"] == secret["metadata"]["name"]
    endpoint = result.get("ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["password"]["name"] == "scrape-auth"
    policy = result.get("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and policy["ingress"][0]["ports"][0]["port"] == "metrics"
    _exporter_loads_web_config(web, tmp_path)


def _exporter_loads_web_config(web: dict, tmp_path: Path) -> None:
    """The exporter accepts the rendered file (paths moved under tmp_path, a throwaway certificate)."""
    from exporter.web_config import load_web_config

    openssl = require_binary("openssl", "apt-get install openssl")
    for folder in ("tls", "client-ca", "web"):
        (tmp_path / folder).mkdir()
    key, cert = tmp_path / "tls" / "tls.key", tmp_path / "tls" / "tls.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=exporter"],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "client-ca" / "ca.crt").write_bytes(cert.read_bytes())
    text = yaml.safe_dump(web).replace("/etc/llmobs/", f"{tmp_path}/")
    (tmp_path / "web" / "web-config.yml").write_text(text)
    loaded = load_web_config(tmp_path / "web" / "web-config.yml")
    assert loaded.ssl_context is not None and loaded.auth_required
    assert loaded.check_authorization("Basic cHJvbWV0aGV1czpzZWNyZXQ=")  # prometheus:secret


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_exporter_accepts_its_rendered_flags(
    rendered: dict[str, Rendered], case: str, tmp_path: Path
) -> None:
    from exporter.config import SETTINGS, load_config

    result = rendered[case]
    container = result.get("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "llmobs-exporter"
    args = [a for a in container["args"][1:] if not a.startswith(("--config=", "--web-config-file="))]
    if any(a.startswith("--config=") for a in container["args"]):
        config = tmp_path / "exporter.yml"
        config.write_text(result.get("ConfigMap", "-exporter")["data"]["exporter.yml"])
        args.append(f"--config={config}")
    # as in the pod: the downward API's node name, the API server's address the kubelet sets
    environ = {e["name"]: e.get("value", "gpu-node-1") for e in container["env"]}
    environ["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    unknown = {n for n in environ if n.startswith("EXPORTER_")} - {s.env for s in SETTINGS}
    assert not unknown, f"the exporter has no setting {unknown}"
    loaded = load_config(args, environ)
    if case == "defaults":
        assert loaded.kubernetes_discovery and loaded.kubernetes_node_name == "gpu-node-1"
        assert str(loaded.kubernetes_pod_resources_socket) == "/var/lib/kubelet/pod-resources/kubelet.sock"
    if case == "minimal":
        assert [t.name for t in loaded.targets] == ["external"] and loaded.log_level == "debug"


@pytest.mark.real
def test_prometheus_rules_are_ours_less_the_disabled_alerts(rendered: dict[str, Rendered]) -> None:
    rules = [o for o in rendered["operator"].objects if o["kind"] == "PrometheusRule"]
    by_file = {o["metadata"]["name"].removeprefix(f"{RELEASE}-llmobs-"): o["spec"] for o in rules}
    sources = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    assert sorted(by_file) == sorted(p.name.removesuffix(".yml").replace(".", "-") for p in sources)
    for path in sources:
        source = yaml.safe_load(path.read_text())
        for group in source["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != "ScrapeTargetDown"]
        source["groups"] = [g for g in source["groups"] if g["rules"]]
        assert by_file[path.name.removesuffix(".yml").replace(".", "-")] == source, path.name


@pytest.mark.real
def test_promtool_accepts_the_rendered_rules(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    files = []
    for rule in (o for o in rendered["operator"].objects if o["kind"] == "PrometheusRule"):
        path = tmp_path / f"{rule['metadata']['name']}.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        files.append(str(path))
    done = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(files) == 6


@pytest.mark.real
def test_dashboards_are_sidecar_config_maps_of_the_committed_json(rendered: dict[str, Rendered]) -> None:
    objects = rendered["defaults"].objects
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "-dashboard-" in o["metadata"]["name"]]
    committed = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert len(maps) == len(committed) == 4
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "LLM serving"
        ((name, text),) = config_map["data"].items()
        assert text == committed[name]
        assert len(text.encode()) < 1024 * 1024  # a ConfigMap holds at most 1 MiB


@pytest.mark.real
def test_load_generator_job_shards_by_completion_index(rendered: dict[str, Rendered]) -> None:
    job = rendered["job"].get("Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    assert job["metadata"]["name"].endswith("-loadgen-1")  # one Job per release revision
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[:2] == ["llmobs-loadgen", "run"]
    assert "--shard=$(JOB_COMPLETION_INDEX)/4" in args and "--run-id=sweep-1" in args
    assert "--workers=1" in args and "--metrics-linger=30s" in args
    assert "--output-json=/reports/report-$(JOB_COMPLETION_INDEX).json" in args
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "engine-key", "key": "api-key"}
    _loadgen_accepts(args[1:])
    serve = rendered["job"].get("Deployment")["spec"]["template"]["spec"]["containers"][0]
    _loadgen_accepts(serve["args"][1:])


def _loadgen_accepts(args: list[str]) -> None:
    """The Job's and the Deployment's arguments parse as the load generator's own (with the completion
    index the Job controller puts into JOB_COMPLETION_INDEX)."""
    from loadgen.cli import _parser
    from loadgen.scenario import INPUTS, Scenario

    parsed = _parser().parse_args([a.replace("$(JOB_COMPLETION_INDEX)", "3") for a in args])
    if parsed.command == "run":  # the settings hold together (--shard needs --run-id, ...)
        scenario = Scenario.build(None, {k: v for k, v in vars(parsed).items() if k in INPUTS})
        assert scenario.shard.index == 3 and not scenario.shard.whole


def test_chart_files_are_fresh() -> None:
    from deploy.helm import generate

    assert generate.problems() == [], "run `make chart`"


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    """The CRD's OpenAPI schema, strict: unknown fields are errors where the schema lists the fields."""
    crd = yaml.safe_load((CRDS / f"monitoring.coreos.com_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _strict(node: object) -> object:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    strict = {key: _strict(value) for key, value in node.items()}
    open_ended = "additionalProperties" in strict or strict.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in strict and not open_ended:
        strict["additionalProperties"] = False
    return strict


@pytest.mark.real
def test_the_image_runs_every_workload_of_the_chart(rendered: dict[str, Rendered]) -> None:
    """Each container's first argument is a console script the Dockerfile's image installs (the image has
    no entrypoint, so `args` replace its CMD), with the extra the exporter's pod-resources client needs."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ENTRYPOINT" not in dockerfile and "pip install '.[kubernetes]'" in dockerfile
    commands = {
        tuple(container["args"][:2])
        for case in ("defaults", "job")
        for obj in rendered[case].objects
        if obj["kind"] in ("DaemonSet", "Job", "Deployment")
        for container in obj["spec"]["template"]["spec"]["containers"]
    }
    assert commands == {("llmobs-exporter", "--listen-address=0.0.0.0:9840"), ("llmobs-loadgen", "run"),
                        ("llmobs-loadgen", "serve")}  # fmt: skip
    assert {command[0] for command in commands} <= set(scripts)

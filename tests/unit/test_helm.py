"""The Helm chart (helm/sync-scorer): `helm lint`, rendered manifests valid against the Kubernetes
API schema (kubernetes-validate, offline), and the worker's config file from the chart loads with
the worker's own config loader. `make test` builds helm into .tools/bin (go install)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sync-scorer"
K8S_VERSION = "1.30.0"


def _helm() -> str:
    local = REPO / ".tools" / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if found is None:
        pytest.fail("helm not found: `make test` builds it into .tools/bin (go install helm.sh/helm/v3/cmd/helm)")
    return found


def _render(*sets: str) -> list[dict]:
    args = [_helm(), "template", "rel", str(CHART)]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_chart_lints():
    proc = subprocess.run([_helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("sets", [(), ("worker.gpu.enabled=true", "worker.autoscaling.enabled=true"),
                                  ("serve.enabled=false",)])
def test_rendered_manifests_are_valid_kubernetes(sets):
    import kubernetes_validate

    docs = _render(*sets)
    assert docs
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)  # raises on any schema error


def test_worker_and_serve_run_the_real_commands_with_probes_and_gpu_limits():
    docs = _by_kind(_render())
    worker = docs[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]
    c = worker["containers"][0]
    assert c["command"][:2] == ["sync-scorer", "worker"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {e["name"] for e in c["env"]} >= {"KAFKA_BOOTSTRAP_SERVERS", "SYNC_SCORER_INSTANCE_ID"}
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert worker["terminationGracePeriodSeconds"] >= 30  # drain, publish, commit on SIGTERM
    serve = docs[("Deployment", "rel-sync-scorer-serve")]["spec"]["template"]["spec"]["containers"][0]
    assert serve["command"][:2] == ["sync-scorer", "serve"]
    # the chart's commands are ones the CLI accepts (its own parser), ports where the Service sends them
    from worker.cli import build_parser

    args = build_parser().parse_args(serve["command"][1:])
    assert (args.port, args.grpc_port) == (8080, 50051)
    assert {p["name"]: p["containerPort"] for p in serve["ports"]} == {"http": 8080, "grpc": 50051}
    svc = docs[("Service", "rel-sync-scorer-serve")]["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in svc} == {(8080, "http"), (50051, "grpc")}
    build_parser().parse_args(c["command"][1:])
    assert ("HorizontalPodAutoscaler", "rel-sync-scorer-worker") not in docs
    gpu = _by_kind(_render("worker.gpu.enabled=true", "worker.autoscaling.enabled=true"))
    limits = gpu[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and limits["memory"] == "6Gi"
    assert "replicas" not in gpu[("Deployment", "rel-sync-scorer-worker")]["spec"]  # the HPA owns it
    assert ("HorizontalPodAutoscaler", "rel-sync-scorer-worker") in gpu


def test_a_worker_config_without_an_http_section_keeps_the_default_metrics_port():
    docs = _by_kind(_render("worker.config.http=null"))  # null deletes the chart's default key
    assert "http" not in yaml.safe_load(docs[("ConfigMap", "rel-sync-scorer-worker")]["data"]["config.yaml"])
    c = docs[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9108}]


def test_the_charts_worker_config_loads_with_the_worker_loader(tmp_path):
    from worker.config import load_config

    cm = _by_kind(_render("worker.config.kafka.group_id=lipsync-prod"))[("ConfigMap", "rel-sync-scorer-worker")]
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = load_config(path)
    assert cfg.kafka.group_id == "lipsync-prod" and cfg.http.port == 9108


def _render_as(release: str, *sets: str) -> subprocess.CompletedProcess:
    args = [_helm(), "template", release, str(CHART)]
    for s in sets:
        args += ["--set-json" if s.startswith("json:") else "--set", s.removeprefix("json:")]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_object_names_stay_within_63_characters_for_long_release_names():
    out = _render_as("prod-lipsync-scorer-eu-west-1-blue-deployment")  # a valid 45-character release
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert all(len(n) <= 63 for _, n in names), names
    assert len(set(names)) == len(names)
    svc = {n for k, n in names if k == "Service"}
    assert any(n.endswith("-worker-metrics") for n in svc) and any(n.endswith("-serve") for n in svc)


def test_kafka_credentials_come_from_a_secret_not_the_configmap():
    env = '[{"name": "SYNC_SCORER_KAFKA__SECRETS", "valueFrom": {"secretKeyRef": {"name": "kafka-cred", "key": "j"}}}]'
    out = _render_as("rel", f"json:worker.extraEnv={env}", 'json:worker.envFrom=[{"secretRef": {"name": "more"}}]',
                     'json:worker.extraVolumes=[{"name": "ca", "secret": {"secretName": "kafka-ca"}}]',
                     'json:worker.extraVolumeMounts=[{"name": "ca", "mountPath": "/etc/kafka-ca", "readOnly": true}]')
    assert out.returncode == 0, out.stderr
    docs = _by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    c = docs[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]
    env_names = {e["name"]: e for e in c["containers"][0]["env"]}
    assert env_names["SYNC_SCORER_KAFKA__SECRETS"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-cred"
    assert c["containers"][0]["envFrom"] == [{"secretRef": {"name": "more"}}]
    assert {"name": "ca", "mountPath": "/etc/kafka-ca", "readOnly": True} in c["containers"][0]["volumeMounts"]
    assert {"name": "ca", "secret": {"secretName": "kafka-ca"}} in c["volumes"]
    assert "secret" not in yaml.safe_load(docs[("ConfigMap", "rel-sync-scorer-worker")]["data"]["config.yaml"])["kafka"]


@pytest.mark.parametrize("sets, needle", [
    (("worker.config.http.port=0",), "worker.config.http.port must be 1..65535"),
    (("serve.grpcPort=0",), "serve.grpcPort must be 1..65535, or -1 for no gRPC"),
    (("serve.grpcPort=70000",), "serve.grpcPort must be 1..65535, or -1 for no gRPC"),
    (("worker.autoscaling.enabled=true", "worker.autoscaling.minReplicas=8"), "minReplicas must not exceed"),
])
def test_values_the_api_server_would_refuse_fail_at_render_time(sets, needle):
    out = _render_as("rel", *sets)
    assert out.returncode != 0 and needle in out.stderr, out.stderr


# (--set, a needle of helm's error, the worker config file the worker would be given, or None for
# a serve value): each rendered cleanly and crash-looped the pod it configured (a review)
_REFUSED = [
    ("serve.maxBodyMb=0", "serve.maxBodyMb must be positive", None),
    ("serve.maxBodyMb=-2", "serve.maxBodyMb must be positive", None),
    ("serve.maxBodyMb=1025", "serve.maxBodyMb must be positive and at most 1024", None),
    ("worker.config.kafka.topics.audio.partitions=12", "must be co-partitioned",
     "kafka: {topics: {audio: {partitions: 12}}}"),
    ("worker.config.kafka.topics.roi.name=av.audio-chunks", "audio and roi topics must differ",
     "kafka: {topics: {roi: {name: av.audio-chunks}}}"),
    ("worker.config.windowing.block_frames=20", "/worker/config/windowing/block_frames", "windowing: {block_frames: 20}"),
    ("worker.config.windowing.blok_frames=8", "'blok_frames' not allowed", "windowing: {blok_frames: 8}"),
    ("worker.config.windowing=5", "/worker/config/windowing", "windowing: 5"),
    ("worker.config.scoring.device=tpu", "/worker/config/scoring/device", "scoring: {device: tpu}"),
    ("worker.config.scoring.bundle_dir=", "/worker/config/scoring/bundle_dir", "scoring: {bundle_dir: ''}"),
    ("worker.config.scoring.max_offset_ms=5000", "/worker/config/scoring/max_offset_ms", "scoring: {max_offset_ms: 5000}"),
    ("json:worker.config.kafka.secrets=5", "/worker/config/kafka/secrets", "kafka: {secrets: 5}"),
    ("json:worker.config.windowing={\"max_buffered_ms\": 2000, \"window_ms\": 1200}",
     "max_buffered_ms must be at least window_ms + allowed_lateness_ms",
     "windowing: {max_buffered_ms: 2000, window_ms: 1200}"),
    ("worker.config.kafka.wire_format=confluent", "needs worker.config.kafka.schema_registry_url",
     "kafka: {wire_format: confluent}"),
]


@pytest.mark.parametrize("value, needle, worker_file", _REFUSED)
def test_values_the_processes_would_refuse_fail_at_render_time(tmp_path, value, needle, worker_file):
    """README: values the processes would refuse fail at render time. Only ports and replica counts
    were checked; the worker's config is now checked against the worker's own model
    (values.schema.json) and rules between its keys (_helpers.tpl), serve's body limit too."""
    out = _render_as("rel", value)
    assert out.returncode != 0 and needle in out.stderr, out.stderr
    if worker_file is not None:  # and the worker does refuse it
        from worker.config import ConfigError, load_config

        path = tmp_path / "config.yaml"
        path.write_text(worker_file)
        with pytest.raises(ConfigError):
            load_config(path)
    else:
        from worker.cli import main

        assert main(["serve", "--max-body-mb", value.split("=", 1)[1]]) == 3


def test_a_misspelled_worker_variable_in_extra_env_fails_at_render_time():
    """The worker refuses a SYNC_SCORER_* name that names no setting (config.load_config)."""
    bad = '[{"name": "SYNC_SCORER_SHUTDOWN_TIMEOUTMS", "value": "2000"}]'
    out = _render_as("rel", f"json:worker.extraEnv={bad}")
    assert out.returncode != 0 and "SYNC_SCORER_SHUTDOWN_TIMEOUTMS" in out.stderr, out.stderr
    good = ('[{"name": "SYNC_SCORER_SHUTDOWN_TIMEOUT_MS", "value": "2000"}, {"name": "OTHER", "value": "x"},'
            ' {"name": "SYNC_SCORER_KAFKA__SECRETS", "valueFrom": {"secretKeyRef": {"name": "k", "key": "j"}}}]')
    assert _render_as("rel", f"json:worker.extraEnv={good}").returncode == 0


def test_values_the_processes_take_still_render_and_load(tmp_path):
    from worker.config import load_config

    out = _render_as("rel", "worker.config.kafka.topics.audio.partitions=12", "worker.config.kafka.topics.roi.partitions=12",
                     "worker.config.windowing.block_frames=8", "worker.config.scoring.max_offset_ms=320",
                     "worker.config.kafka.wire_format=confluent", "worker.config.kafka.schema_registry_url=http://sr:8081",
                     'json:worker.config.kafka.librdkafka={"security.protocol": "SASL_SSL"}', "serve.maxBodyMb=0.5")
    assert out.returncode == 0, out.stderr
    docs = _by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    path = tmp_path / "config.yaml"
    path.write_text(docs[("ConfigMap", "rel-sync-scorer-worker")]["data"]["config.yaml"])
    cfg = load_config(path)
    assert cfg.kafka.topics.roi.partitions == 12 and cfg.scoring.max_offset_ms == 320


def test_the_values_schema_is_the_worker_configs():
    """values.schema.json is generated from worker/config.py: a setting added there and not here
    would be refused by the chart (or a range changed there let through)."""
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "chart_values_schema.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_serve_without_grpc_renders_no_grpc_port():
    """serve.grpcPort -1 is serve's "no gRPC": the chart refused it; now the command says -1 and
    neither the container nor the Service names a gRPC port."""
    import kubernetes_validate

    from worker.cli import build_parser

    out = _render_as("rel", "serve.grpcPort=-1")
    assert out.returncode == 0, out.stderr
    raw = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in raw:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    docs = _by_kind(raw)
    serve = docs[("Deployment", "rel-sync-scorer-serve")]["spec"]["template"]["spec"]["containers"][0]
    assert build_parser().parse_args(serve["command"][1:]).grpc_port == -1
    assert serve["ports"] == [{"name": "http", "containerPort": 8080}]
    assert docs[("Service", "rel-sync-scorer-serve")]["spec"]["ports"] == [{"name": "http", "port": 8080,
                                                                          "targetPort": "http"}]


def test_lag_based_autoscaling_renders_a_keda_scaledobject_on_both_input_topics():
    import kubernetes_validate

    out = _render_as("rel", "worker.keda.enabled=true", "worker.keda.maxReplicas=6",
                     "worker.config.kafka.topics.audio.name=a.in", "worker.config.kafka.topics.roi.name=r.in")
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert len(scaled) == 1 and scaled[0]["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled[0]["spec"]
    assert spec["scaleTargetRef"]["name"] == "rel-sync-scorer-worker" and spec["maxReplicaCount"] == 6
    assert sorted(t["metadata"]["topic"] for t in spec["triggers"]) == ["a.in", "r.in"]
    assert all(t["type"] == "kafka" and t["metadata"]["consumerGroup"] == "sync-scorer" for t in spec["triggers"])
    worker = _by_kind(docs)[("Deployment", "rel-sync-scorer-worker")]
    assert "replicas" not in worker["spec"]  # KEDA's HPA owns the count
    assert not any(d["kind"] == "HorizontalPodAutoscaler" for d in docs)
    for d in docs:  # the CRD is KEDA's; everything else is plain Kubernetes
        if d["kind"] != "ScaledObject":
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    both = _render_as("rel", "worker.keda.enabled=true", "worker.autoscaling.enabled=true")
    assert both.returncode != 0 and "enable one" in both.stderr


def test_pods_get_no_service_link_variables():
    """Kubernetes would give each pod SYNC_SCORER_SERVE_SERVICE_HOST and such for a release's
    Services (named <release>-sync-scorer-*, or sync-scorer-* with fullnameOverride): the worker
    reads SYNC_SCORER_* as settings, so the chart turns service links off (and the config loader
    lets their pattern through in any case)."""
    docs = _by_kind(_render("fullnameOverride=sync-scorer"))
    for (kind, _name), d in docs.items():
        if kind == "Deployment":
            assert d["spec"]["template"]["spec"]["enableServiceLinks"] is False, _name


_ENV = 'json:worker.extraEnv=[{{"name": "{}", "value": "{}"}}]'

# (--set, a needle of helm's error): each rendered cleanly and broke in the cluster (a probe): the
# pod killed mid-drain, probes where the worker does not listen, the worker dialling 127.0.0.1:9092,
# credentials in plain text, a crash loop on a misspelled variable, or a manifest the API server
# (or KEDA) refuses
_REFUSED_FOR_THE_CLUSTER = [
    # the drain within the pod's grace period (the worker gives up at shutdown_timeout_ms; + 5 s margin)
    ("worker.config.shutdown_timeout_ms=120000", ("worker.terminationGracePeriodSeconds must be at least 125 "
     "(worker.config.shutdown_timeout_ms, 120000 ms")),
    ("worker.terminationGracePeriodSeconds=20", ("worker.terminationGracePeriodSeconds must be at least 50 "
     "(the worker's default shutdown_timeout_ms, 45000 ms")),
    (_ENV.format("SYNC_SCORER_SHUTDOWN_TIMEOUT_MS", "90000"), ("must be at least 95 (worker.extraEnv "
     "SYNC_SCORER_SHUTDOWN_TIMEOUT_MS, 90000 ms")),
    ("serve.terminationGracePeriodSeconds=25", "serve.terminationGracePeriodSeconds must be at least 30"),
    ("serve.shutdownGraceSeconds=30", "serve.terminationGracePeriodSeconds must be at least 40"),
    ("serve.shutdownGraceSeconds=3600.5", "serve.shutdownGraceSeconds must be 0..3600"),
    # the probes and the metrics port follow worker.config.http: not an env override, not loopback
    (_ENV.format("SYNC_SCORER_HTTP__PORT", "9200"), "worker.extraEnv must not set SYNC_SCORER_HTTP__PORT"),
    # the host may come from the env (the pod's IP: test_an_http_host_from_the_pod_ip_still_renders), not loopback
    (_ENV.format("sync_scorer_http__host", "127.0.0.1"), "worker.extraEnv sync_scorer_http__host must not be a loopback"),
    (_ENV.format("SYNC_SCORER_HTTP__HOST", "localhost"), "worker.extraEnv SYNC_SCORER_HTTP__HOST must not be a loopback"),
    (_ENV.format("SYNC_SCORER_HTTP__HOST", "metrics.localhost"), "SYNC_SCORER_HTTP__HOST must not be a loopback"),
    (_ENV.format("SYNC_SCORER_HTTP__HOST", "::1"), "SYNC_SCORER_HTTP__HOST must not be a loopback"),
    (_ENV.format("SYNC_SCORER_HTTP__HOST", "::ffff:127.0.0.1"), "SYNC_SCORER_HTTP__HOST must not be a loopback"),
    (_ENV.format("SYNC_SCORER_HTTP", "{}"), "worker.extraEnv must not set SYNC_SCORER_HTTP:"),
    ("worker.config.http.host=127.0.0.1", "worker.config.http.host must not be a loopback address"),
    ("worker.config.http.host=127.0.1.1", "worker.config.http.host must not be a loopback address"),
    ("worker.config.http.host=localhost", "worker.config.http.host must not be a loopback address"),
    ("worker.config.http.host=::1", "worker.config.http.host must not be a loopback address"),
    # KAFKA_BOOTSTRAP_SERVERS="" is unset to the worker: with nothing else naming the brokers it
    # dialled 127.0.0.1:9092 in the pod (test_brokers_named_elsewhere_still_render: the other sources)
    ("kafka.bootstrapServers=", "kafka.bootstrapServers must name the brokers"),
    ('json:kafka.bootstrapServers=" "', "kafka.bootstrapServers must name the brokers"),
    (("kafka.bootstrapServers=", 'json:worker.extraEnv=[{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": " "}]'),
     "kafka.bootstrapServers must name the brokers"),
    (("kafka.bootstrapServers=", 'json:worker.extraEnv=[{"name": "SYNC_SCORER_KAFKA", "value": "{\\"group_id\\": \\"g\\"}"}]'),
     "kafka.bootstrapServers must name the brokers"),
    # the ScaledObject's triggers take the brokers from kafka.bootstrapServers only
    (("kafka.bootstrapServers=", "worker.config.kafka.bootstrap_servers=broker-0.kafka:9092", "worker.keda.enabled=true"),
     "worker.keda needs kafka.bootstrapServers"),
    # credentials: the ConfigMap (and an env value) is plain text
    ("worker.config.kafka.librdkafka.sasl\\.password=hunter2",
     ("worker.config.kafka.librdkafka.sasl.password is a credential and would be plain text in the worker's "
     "ConfigMap: put credentials in a Secret")),
    ('json:worker.config.kafka.consumer={"SSL.KEY.PEM": "x"}', "worker.config.kafka.consumer.SSL.KEY.PEM is a credential"),
    ('json:worker.config.kafka.producer={"sasl.oauthbearer.client.secret": "x"}',
     "worker.config.kafka.producer.sasl.oauthbearer.client.secret is a credential"),
    ('json:worker.config.kafka.secrets={"sasl.password": "hunter2"}',
     "worker.config.kafka.secrets would be plain text in the worker's ConfigMap"),
    (_ENV.format("SYNC_SCORER_KAFKA__SECRETS", "{}"), ("worker.extraEnv SYNC_SCORER_KAFKA__SECRETS is a credential "
     "given as a plain value")),
    (_ENV.format("SYNC_SCORER_KAFKA__LIBRDKAFKA__sasl.password", "x"), "is a credential given as a plain value"),
    # an extraEnv name must name a setting down to the leaf (the worker exits 3 otherwise)
    (_ENV.format("SYNC_SCORER_WINDOWING__BLOK", "8"), "'SYNC_SCORER_WINDOWING__BLOK' does not match pattern"),
    (_ENV.format("sync_scorer_windowing__blok", "8"), "'sync_scorer_windowing__blok' does not match pattern"),
    (_ENV.format("SYNC_SCORER_KAFKA__TOPICS__AUDIO__PARTS", "8"), ("'SYNC_SCORER_KAFKA__TOPICS__AUDIO__PARTS' does "
     "not match")),
    (_ENV.format("SYNC_SCORER_SCORING__DEVICE__X", "cpu"), "'SYNC_SCORER_SCORING__DEVICE__X' does not match"),
    # the chart's own values, as the API server bounds them
    ("worker.replicas=-1", "at '/worker/replicas': minimum: got -1, want 0"),
    ("serve.replicas=-1", "at '/serve/replicas': minimum: got -1, want 0"),
    ("worker.gpu.count=-2", "at '/worker/gpu/count': minimum: got -2, want 1"),
    ("worker.resources.requests.cpu=two", "at '/worker/resources/requests/cpu': 'two' does not match pattern"),
    ("serve.resources.limits.memory=-4Gi", "at '/serve/resources/limits/memory': '-4Gi' does not match pattern"),
    ("worker.autoscaling.targetCPUUtilizationPercentage=0",
     "at '/worker/autoscaling/targetCPUUtilizationPercentage': minimum: got 0, want 1"),
    ("worker.autoscaling.minReplicas=0", "at '/worker/autoscaling/minReplicas': minimum: got 0, want 1"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ("worker.keda.lagThreshold=-5", "at '/worker/keda/lagThreshold': minimum: got -5, want 1"),
    # a number that is not whole: YAML read the tag 1.10 as 1.1 (a whole one renders: test_a_numeric_image_tag_...)
    ("json:image.tag=1.1", ("image.tag 1.1 is a number, which may not be the tag written (YAML reads 1.10 as 1.1, "
                            "0123 as 83): quote it in the values file (tag: \"1.10\") or pass it with --set-string")),
    ("json:image.tag=1e20", "image.tag 1e+20 is a number, which may not be the tag written"),
    ("json:image.tag=true", "at '/image/tag': got boolean, want number or string"),
    ("worker.podDisruptionBudget.maxUnavailable=half", "at '/worker/podDisruptionBudget/maxUnavailable'"),
    ("worker.terminationGracePeriodSeconds=-1", "at '/worker/terminationGracePeriodSeconds': minimum"),
    ("worker.replica=3", "at '/worker': additional properties 'replica' not allowed"),
]


@pytest.mark.parametrize("value, needle", _REFUSED_FOR_THE_CLUSTER)
def test_values_that_break_in_the_cluster_fail_at_render_time(value, needle):
    out = _render_as("rel", *((value,) if isinstance(value, str) else value))
    assert out.returncode != 0 and needle in out.stderr, out.stderr
    message = [line for line in out.stderr.splitlines() if needle.splitlines()[0][:40] in line]
    assert len(message) == 1, out.stderr  # one line, naming the value


@pytest.mark.parametrize("name", ["SYNC_SCORER_WINDOWING__BLOK", "sync_scorer_windowing__blok",
                                  "SYNC_SCORER_KAFKA__TOPICS__AUDIO__PARTS", "SYNC_SCORER_SCORING__DEVICE__X"])
def test_the_names_the_chart_refuses_the_worker_refuses(monkeypatch, name):
    from worker.config import ConfigError, load_config

    monkeypatch.setenv(name, "8")
    with pytest.raises(ConfigError):
        load_config()


def test_values_near_the_new_limits_still_render_as_valid_kubernetes():
    import kubernetes_validate

    from worker.config import WorkerConfig
    from worker.serving.cli import DEFAULT_GRACE_S
    from worker.serving.http import CANCEL_WAIT_S

    margin_s = 5
    # the chart's default shutdown timeout is the worker's: its grace period fits exactly, one less does not
    need_s = -(-WorkerConfig.model_fields["shutdown_timeout_ms"].default // 1000) + margin_s
    assert _render_as("rel", f"worker.terminationGracePeriodSeconds={need_s}").returncode == 0
    assert _render_as("rel", f"worker.terminationGracePeriodSeconds={need_s - 1}").returncode != 0
    # serve: its grace, then CANCEL_WAIT_S for the stopped requests, then the margin
    serve_need_s = int(DEFAULT_GRACE_S + CANCEL_WAIT_S) + margin_s
    assert _render_as("rel", f"serve.terminationGracePeriodSeconds={serve_need_s}").returncode == 0
    assert _render_as("rel", f"serve.terminationGracePeriodSeconds={serve_need_s - 1}").returncode != 0
    out = _render_as("rel", "worker.config.shutdown_timeout_ms=54001", "worker.config.http.host=::",
                     "image.tag=1.10", "worker.resources.requests.cpu=500m", "worker.resources.requests.memory=1.5Gi",
                     "serve.resources.requests.cpu=0.5", "worker.podDisruptionBudget.maxUnavailable=50%",
                     "serve.shutdownGraceSeconds=50.5", "serve.terminationGracePeriodSeconds=61",
                     "kafka.bootstrapServers=k1:9092\\,k2:9092",
                     'json:worker.extraEnv=[{"name": "SYNC_SCORER_KAFKA__TOPICS__AUDIO__NAME", "value": "a"},'
                     ' {"name": "sync_scorer_kafka__librdkafka__socket.timeout.ms", "value": "5000"},'
                     ' {"name": "SYNC_SCORER_KAFKA__SECRETS", "valueFrom": {"secretKeyRef": {"name": "k", "key": "j"}}}]',
                     'json:worker.config.kafka.librdkafka={"sasl.username": "u", "ssl.ca.location": "/etc/kafka-ca/ca.pem"}')
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    by = _by_kind(docs)
    worker = by[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]
    assert worker["containers"][0]["image"] == "sync-scorer:1.10"
    serve = by[("Deployment", "rel-sync-scorer-serve")]["spec"]["template"]["spec"]
    assert serve["terminationGracePeriodSeconds"] == 61
    from worker.cli import build_parser

    assert build_parser().parse_args(serve["containers"][0]["command"][1:]).shutdown_grace_s == 50.5


def test_the_charts_secret_markers_are_the_workers():
    """The chart refuses worker.config keys the worker would treat as credentials (it moves them to
    kafka.secrets): the same markers, or a credential would slip into the ConfigMap."""
    import re

    from worker.config import _SECRET_KEY_MARKERS

    tpl = (CHART / "templates" / "_helpers.tpl").read_text()
    found = re.search(r"\$secretMarkers := list ((?:\"[^\"]*\"\s*)+)", tpl)
    assert found, "no $secretMarkers list in _helpers.tpl"
    assert sorted(re.findall(r"\"([^\"]*)\"", found.group(1))) == sorted(_SECRET_KEY_MARKERS)
    for marker in _SECRET_KEY_MARKERS:  # and each is refused in worker.config
        out = _render_as("rel", f'json:worker.config.kafka.librdkafka={{"x.{marker}.y": "v"}}')
        assert out.returncode != 0 and "is a credential" in out.stderr, (marker, out.stderr)


def _valid_docs(out: subprocess.CompletedProcess) -> dict[tuple[str, str], dict]:
    """The rendered manifests, each valid Kubernetes (KEDA's CRD aside), by kind and name."""
    import kubernetes_validate

    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in docs:
        if d["kind"] != "ScaledObject":
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    return _by_kind(docs)


def _worker_container(docs: dict[tuple[str, str], dict]) -> dict:
    return docs[("Deployment", "rel-sync-scorer-worker")]["spec"]["template"]["spec"]["containers"][0]


_SECRET_BROKERS = {"secretKeyRef": {"name": "kafka", "key": "brokers"}}


@pytest.mark.parametrize("sets", [
    ("worker.config.kafka.bootstrap_servers=broker-0.kafka:9092",),
    ('json:worker.extraEnv=[{"name": "KAFKA_BOOTSTRAP_SERVERS", "valueFrom": ' + json.dumps(_SECRET_BROKERS) + '}]',),
    (('json:worker.extraEnv=[{"name": "KAFKA_BOOTSTRAP_SERVERS", "valueFrom": {"configMapKeyRef": {"name": "kafka", '
     '"key": "brokers"}}}]'),),
    ('json:worker.extraEnv=[{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "broker-0.kafka:9092"}]',),
    ('json:worker.extraEnv=[{{"name": "sync_scorer_kafka__bootstrap_servers", "valueFrom": {}}}]'.format(str(_SECRET_BROKERS).replace("'", '"')),),
    ('json:worker.envFrom=[{"configMapRef": {"name": "kafka-env"}}]',),
])
def test_brokers_named_elsewhere_still_render(sets):
    """An empty kafka.bootstrapServers is "unset" to the worker (KAFKA_BOOTSTRAP_SERVERS=""), so
    the brokers may come from worker.config, an extraEnv variable (a Secret's, a ConfigMap's) or
    envFrom: the chart refused each (a review). The pod then gets no KAFKA_BOOTSTRAP_SERVERS of
    the chart's, which would win over the config file and over envFrom."""
    docs = _valid_docs(_render_as("rel", "kafka.bootstrapServers=", *sets))
    env = _worker_container(docs)["env"]
    assert not [e for e in env if e.get("value") in ("", "kafka:9092")], env
    assert [e["name"] for e in env].count("KAFKA_BOOTSTRAP_SERVERS") == sum("KAFKA_BOOTSTRAP_SERVERS" in s for s in sets)


def test_brokers_from_the_worker_config_are_the_ones_the_worker_reads(tmp_path, monkeypatch):
    from worker.config import load_config

    docs = _valid_docs(_render_as("rel", "kafka.bootstrapServers=",
                                  "worker.config.kafka.bootstrap_servers=broker-0.kafka:9092\\,broker-1.kafka:9092"))
    c = _worker_container(docs)
    assert "KAFKA_BOOTSTRAP_SERVERS" not in {e["name"] for e in c["env"]}
    path = tmp_path / "config.yaml"
    path.write_text(docs[("ConfigMap", "rel-sync-scorer-worker")]["data"]["config.yaml"])
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # as in the pod
    assert load_config(path).kafka.bootstrap_servers == "broker-0.kafka:9092,broker-1.kafka:9092"
    # and the default still sets the variable, which wins over the file
    default = _worker_container(_by_kind(_render()))
    assert {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "kafka:9092"} in default["env"]


def test_keda_with_kafka_bootstrap_servers_still_renders_its_brokers():
    docs = _valid_docs(_render_as("rel", "worker.keda.enabled=true", "kafka.bootstrapServers=k1:9092\\,k2:9092",
                                  "worker.config.kafka.bootstrap_servers=other:9092"))
    scaled = [d for (kind, _), d in docs.items() if kind == "ScaledObject"]
    assert [t["metadata"]["bootstrapServers"] for t in scaled[0]["spec"]["triggers"]] == ["k1:9092,k2:9092"] * 2


@pytest.mark.parametrize("host", [{"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, {"value": "10.0.0.5"},
                                  {"value": "0.0.0.0"}, {"value": "::"}])
def test_an_http_host_from_the_pod_ip_still_renders(tmp_path, monkeypatch, host):
    """SYNC_SCORER_HTTP__HOST from the pod's IP (the address the kubelet probes, which
    worker.config cannot name) or any address not loopback: the chart refused every form (a
    review). The env wins over the config file's host, a loopback one there included, and the port
    stays the config's (the probes' and the Service's)."""
    import json

    from worker.config import load_config

    env = json.dumps([{"name": "SYNC_SCORER_HTTP__HOST", **host}])
    docs = _valid_docs(_render_as("rel", f"json:worker.extraEnv={env}", "worker.config.http.host=127.0.0.1"))
    c = _worker_container(docs)
    assert {"name": "SYNC_SCORER_HTTP__HOST", **host} in c["env"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9108}]
    path = tmp_path / "config.yaml"
    path.write_text(docs[("ConfigMap", "rel-sync-scorer-worker")]["data"]["config.yaml"])
    monkeypatch.setenv("SYNC_SCORER_HTTP__HOST", host.get("value", "10.1.2.3"))  # the kubelet fills status.podIP in
    cfg = load_config(path)
    assert cfg.http.host == host.get("value", "10.1.2.3") and cfg.http.port == 9108


@pytest.mark.parametrize("how, tag", [("set", "123"), ("set", "0"), ("set", "1.10"), ("file", '"1.10"'),
                                      ("file", '"0123"')])
def test_a_numeric_image_tag_still_renders_as_written(tmp_path, how, tag):
    """--set image.tag=123 (an int64, the digits given) rendered sync-scorer:123 and the schema then
    refused it (a review); a quoted tag in a values file is the string written."""
    if how == "file":
        values = tmp_path / "values.yaml"
        values.write_text(f"image:\n  tag: {tag}\n")
        out = subprocess.run([_helm(), "template", "rel", str(CHART), "-f", str(values)], capture_output=True,
                             text=True, timeout=120, check=False)
    else:
        out = _render_as("rel", f"{'json:' if how == 'json' else ''}image.tag={tag}")
    docs = _valid_docs(out)
    want = "sync-scorer:" + tag.strip('"')
    assert _worker_container(docs)["image"] == want
    assert docs[("Deployment", "rel-sync-scorer-serve")]["spec"]["template"]["spec"]["containers"][0]["image"] == want


@pytest.mark.parametrize("tag, read", [("1.10", "1.1"), ("0123", "83"), ("1_000", "1000"), ("20240101", "2.0240101e+07")])
def test_a_values_file_tag_read_as_a_number_is_refused_with_the_fix(tmp_path, tag, read):
    """YAML makes a number of an unquoted tag, not always the one written (a review: 0123 rendered
    sync-scorer:83, 1_000 sync-scorer:1000): refused, naming the fix."""
    values = tmp_path / "values.yaml"
    values.write_text(f"image:\n  tag: {tag}\n")
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "-f", str(values)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode != 0 and f"image.tag {read} is a number" in out.stderr, out.stderr
    assert "--set-string" in out.stderr


def test_brokers_in_extra_env_are_the_pods_only_ones():
    """A review: an extraEnv KAFKA_BOOTSTRAP_SERVERS beside the default kafka.bootstrapServers put
    the variable in the pod twice (Kubernetes warns, the later wins) and KEDA read the other one."""
    env = json.dumps([{"name": "KAFKA_BOOTSTRAP_SERVERS", "valueFrom": _SECRET_BROKERS}])
    c = _worker_container(_valid_docs(_render_as("rel", f"json:worker.extraEnv={env}")))
    assert [e for e in c["env"] if e["name"] == "KAFKA_BOOTSTRAP_SERVERS"] == [
        {"name": "KAFKA_BOOTSTRAP_SERVERS", "valueFrom": _SECRET_BROKERS}]
    out = _render_as("rel", f"json:worker.extraEnv={env}", "worker.keda.enabled=true")
    assert out.returncode != 0 and "KEDA reads kafka.bootstrapServers only" in out.stderr, out.stderr

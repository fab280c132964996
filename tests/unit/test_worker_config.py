"""The worker config: defaults < YAML < env, KAFKA_BOOTSTRAP_SERVERS last, secrets never shown."""

from __future__ import annotations

import json

import pytest

from worker.config import ConfigError, load_config

YAML = """
kafka:
  bootstrap_servers: broker-a:9092
  group_id: from-yaml
  topics:
    audio: {name: a.in, partitions: 4}
    roi: {name: r.in, partitions: 4}
  librdkafka:
    security.protocol: SASL_SSL
    sasl.mechanism: PLAIN
    sasl.username: alice
    sasl.password: hunter2
windowing:
  block_frames: 8
  window_ms: 1200
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("SYNC_SCORER_") or key == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(key)


def test_defaults_match_the_contract():
    cfg = load_config()
    assert cfg.kafka.topics.inputs() == ("av.audio-chunks", "av.roi-refs")
    assert cfg.kafka.topics.signals.name == "av.lipsync-signals"
    assert cfg.kafka.topics.dlq.name == "av.lipsync-dlq"
    assert cfg.windowing.block_frames == 16
    assert cfg.windowing.window_ms == 1000
    assert cfg.scoring.device == "auto"


def test_yaml_then_env_then_bootstrap_variable(tmp_path, monkeypatch):
    path = tmp_path / "w.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    assert cfg.kafka.bootstrap_servers == "broker-a:9092"
    assert cfg.kafka.topics.audio.partitions == 4
    assert cfg.windowing.block_frames == 8 and cfg.windowing.window_ms == 1200

    monkeypatch.setenv("SYNC_SCORER_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("SYNC_SCORER_WINDOWING__BLOCK_FRAMES", "12")
    cfg = load_config(path)
    assert cfg.kafka.group_id == "from-env"
    assert cfg.windowing.block_frames == 12
    # env for one nested key keeps the YAML's siblings
    assert cfg.windowing.window_ms == 1200
    assert cfg.kafka.bootstrap_servers == "broker-a:9092"

    monkeypatch.setenv("SYNC_SCORER_KAFKA__BOOTSTRAP_SERVERS", "broker-env:9092")
    assert load_config(path).kafka.bootstrap_servers == "broker-env:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    assert load_config(path).kafka.bootstrap_servers == "127.0.0.1:29092"


def test_secrets_are_masked_everywhere_but_the_client_config(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    assert "sasl.password" not in cfg.kafka.librdkafka
    shown = json.dumps(cfg.redacted()) + repr(cfg) + str(cfg)
    assert "hunter2" not in shown
    conf = cfg.kafka.client_config("consumer")
    assert conf["sasl.password"] == "hunter2"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["bootstrap.servers"] == "broker-a:9092"


def test_a_variable_that_is_not_json_is_named(monkeypatch):
    monkeypatch.setenv("SYNC_SCORER_KAFKA__LIBRDKAFKA", "not json")
    with pytest.raises(ConfigError, match="SYNC_SCORER_KAFKA__LIBRDKAFKA: not valid JSON"):
        load_config()


def test_librdkafka_passthrough_from_env_json(monkeypatch):
    monkeypatch.setenv("SYNC_SCORER_KAFKA__LIBRDKAFKA", '{"ssl.ca.location": "/ca.pem", "ssl.key.password": "k"}')
    cfg = load_config()
    assert cfg.kafka.librdkafka == {"ssl.ca.location": "/ca.pem"}
    assert cfg.kafka.client_config("producer")["ssl.key.password"] == "k"
    assert "'k'" not in repr(cfg)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("windowing: {block_frames: 20}", "windowing.block_frames"),
        ("windowing: {window_ms: 500}", "windowing.window_ms"),
        ("kafka: {topics: {audio: {name: a, partitions: 3}}}", "co-partitioned"),
        ("scoring: {device: tpu}", "scoring.device"),
        ("scoring: {max_offset_ms: 5000}", "scoring.max_offset_ms"),
        ("nonsense: 1", "nonsense"),
        ("- a list", "mapping"),
        ("a: [", "not valid YAML"),
        # inf and NaN are no settings, nor an empty broker list (a review: all three were taken)
        ("scoring:\n  max_wait_ms: .inf\n", "max_wait_ms"),
        ("scoring:\n  silence_rms_threshold: .nan\n", "silence_rms_threshold"),
        ("kafka:\n  bootstrap_servers: ''\n", "bootstrap_servers"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(ValueError, match="frozen"):
        cfg.windowing.block_frames = 9  # type: ignore[misc]


def test_scoring_defaults_follow_the_device_and_cores(monkeypatch):
    cfg = load_config()
    assert cfg.scoring.batch_size_for("cpu") == 8
    assert cfg.scoring.batch_size_for("cuda:0") == 32
    monkeypatch.setattr("worker.config.available_cores", lambda: 2)
    assert cfg.scoring.cpu_threads() == 1  # one core stays for the poll loop
    monkeypatch.setattr("worker.config.available_cores", lambda: 16)
    assert cfg.scoring.cpu_threads() == 4
    monkeypatch.setenv("SYNC_SCORER_SCORING__TORCH_THREADS", "3")
    monkeypatch.setenv("SYNC_SCORER_SCORING__MAX_BATCH_SIZE", "5")
    cfg = load_config()
    assert cfg.scoring.cpu_threads() == 3 and cfg.scoring.batch_size_for("cuda") == 5
    assert cfg.scoring.resume_below == cfg.scoring.max_queued_jobs // 2


def test_the_offset_search_is_configurable_and_reaches_the_scorer(monkeypatch):
    """CONTRACT: -200..+200 ms by default, configurable; the scorer searches what is set and
    asks the join for that much more audio around each job."""
    from worker.worker_cli import load_worker_scorer

    default = load_worker_scorer(load_config())
    assert (default.config.min_offset_ms, default.config.max_offset_ms) == (-200.0, 200.0)
    monkeypatch.setenv("SYNC_SCORER_SCORING__MAX_OFFSET_MS", "500")
    wide = load_worker_scorer(load_config())
    assert (wide.config.min_offset_ms, wide.config.max_offset_ms) == (-500.0, 500.0)
    assert wide.search_margin_ms == pytest.approx(default.search_margin_ms + 300.0)


def test_a_shutdown_that_overruns_its_deadline_ends_the_process(monkeypatch):
    """The watchdog the worker command arms on SIGTERM: if draining (publish, flush, commit) is
    still going on after shutdown_timeout_ms, the process exits (code 4) instead of hanging past
    the pod's grace period on a broker that stopped answering."""
    import signal
    import threading

    from worker.worker_cli import _stop_on_signals

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    exited = threading.Event()
    codes = []
    try:
        stop = threading.Event()
        handler = _stop_on_signals(stop, 0.2, exit_now=lambda code: (codes.append(code), exited.set()))
        handler(signal.SIGTERM, None)
        assert stop.is_set()
        assert exited.wait(5) and codes == [4]
        handler(signal.SIGTERM, None)  # a second signal arms nothing more
        assert codes == [4]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert load_config().shutdown_timeout_ms == 45_000


def test_available_cores_honours_a_containers_cpu_quota(tmp_path, monkeypatch):
    from worker.config import available_cores

    monkeypatch.setattr("os.cpu_count", lambda: 32)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(32)))
    limited = tmp_path / "cpu.max"
    limited.write_text("150000 100000\n")  # a 1.5-CPU limit: 2 cores' worth of threads at most
    assert available_cores(str(limited)) == 2
    limited.write_text("max 100000\n")  # no limit
    assert available_cores(str(limited)) == 32
    assert available_cores(str(tmp_path / "absent")) == 32
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2})
    assert available_cores(str(tmp_path / "absent")) == 3


@pytest.mark.parametrize("env, file_text, needle", [
    ({"SYNC_SCORER_KAFKA__SECRETS": "12345"}, None, "kafka.secrets: must be a mapping"),
    ({"SYNC_SCORER_KAFKA__SECRETS": "[1]"}, None, "kafka.secrets: must be a mapping"),
    ({"SYNC_SCORER_KAFKA__CONSUMER": "7"}, None, "kafka.consumer: must be a mapping"),
    ({"SYNC_SCORER_KAFKA__PRODUCER": '"x"'}, None, "kafka.producer: must be a mapping"),
    ({}, "kafka: {librdkafka: [1, 2]}", "kafka.librdkafka: must be a mapping"),
    ({}, "kafka: {secrets: 5}", "kafka.secrets: must be a mapping"),
    ({}, "kafka: {topics: {audio: fred}}", "kafka.topics.audio: must be a mapping"),
    ({}, "kafka: {librdkafka: {a: {b: 1}}}", "kafka.librdkafka.a: must be a string, number or boolean"),
])
def test_a_kafka_section_that_is_not_a_mapping_is_one_config_error(tmp_path, monkeypatch, env, file_text, needle):
    """_move_secrets called dict() on each section: a number or a list there was a TypeError (a
    25-line traceback from the worker and replay commands) instead of the config error."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = None
    if file_text is not None:
        path = tmp_path / "k.yaml"
        path.write_text(file_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith("invalid config: ") and needle in text and "\n" not in text, text


def test_the_commands_say_a_bad_kafka_section_in_one_line_with_the_config_exit_code(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_SCORER_")}
    for cmd in (["worker"], ["replay", "--session", "x"]):
        proc = subprocess.run([sys.executable, "-m", "worker.cli", *cmd], env={**env, "SYNC_SCORER_KAFKA__SECRETS": "12345"},
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.strip() == "error: invalid config: kafka.secrets: must be a mapping, got a number"


def test_a_misspelled_top_level_variable_is_refused_as_a_nested_one_is(monkeypatch):
    """SYNC_SCORER_WINDOWING__BLOK was refused while SYNC_SCORER_SHUTDOWN_TIMEOUTMS was ignored:
    the worker ran with the default it was meant to override."""
    monkeypatch.setenv("SYNC_SCORER_SHUTDOWN_TIMEOUTMS", "2000")
    with pytest.raises(ConfigError, match="SYNC_SCORER_SHUTDOWN_TIMEOUTMS: no such setting"):
        load_config()
    monkeypatch.delenv("SYNC_SCORER_SHUTDOWN_TIMEOUTMS")
    monkeypatch.setenv("SYNC_SCORER_KAFKA_GROUP_ID", "g")  # one underscore: not kafka.group_id
    with pytest.raises(ConfigError, match="SYNC_SCORER_KAFKA_GROUP_ID: no such setting"):
        load_config()
    monkeypatch.delenv("SYNC_SCORER_KAFKA_GROUP_ID")
    monkeypatch.setenv("SYNC_SCORER_WINDOWING__BLOK", "8")
    with pytest.raises(ConfigError, match="windowing.blok"):
        load_config()
    monkeypatch.delenv("SYNC_SCORER_WINDOWING__BLOK")
    # the project's own non-config variable, Kubernetes' service links (a Service named
    # sync-scorer-serve, or sync-scorer, in the pod's namespace), and real settings, still pass
    from worker.kafka.broker import DOCKER_ENV

    for name, value in [("SYNC_SCORER_SERVE_SERVICE_HOST", "10.0.0.7"), ("SYNC_SCORER_SERVE_SERVICE_PORT", "8080"),
                        ("SYNC_SCORER_SERVE_SERVICE_PORT_GRPC", "50051"), ("SYNC_SCORER_SERVE_PORT", "tcp://10.0.0.7:8080"),
                        ("SYNC_SCORER_SERVE_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
                        ("SYNC_SCORER_SERVE_PORT_8080_TCP_PROTO", "tcp"), ("SYNC_SCORER_SERVE_PORT_8080_TCP_PORT", "8080"),
                        ("SYNC_SCORER_SERVE_PORT_8080_TCP_ADDR", "10.0.0.7"), ("SYNC_SCORER_SERVICE_HOST", "10.0.0.8"),
                        ("SYNC_SCORER_PORT", "tcp://10.0.0.8:9000"),
                        ("SYNC_SCORER_SYNC_SCORER_WORKER_METRICS_SERVICE_HOST", "10.0.0.9"),
                        ("SYNC_SCORER_SYNC_SCORER_WORKER_METRICS_PORT_9000_TCP_ADDR", "10.0.0.9")]:
        monkeypatch.setenv(name, value)
    # ... but only for a service Kubernetes linked (its _SERVICE_HOST is set): a one-underscore
    # typo of http.port is not a service's variable
    monkeypatch.setenv("SYNC_SCORER_HTTP_PORT", "9200")
    with pytest.raises(ConfigError, match="SYNC_SCORER_HTTP_PORT: no such setting"):
        load_config()
    monkeypatch.delenv("SYNC_SCORER_HTTP_PORT")

    monkeypatch.setenv(DOCKER_ENV, "0")
    monkeypatch.setenv("SYNC_SCORER_SHUTDOWN_TIMEOUT_MS", "2000")
    monkeypatch.setenv("sync_scorer_instance_id", "pod-1")  # names are case-insensitive
    cfg = load_config()
    assert cfg.shutdown_timeout_ms == 2000 and cfg.instance_id == "pod-1"


def test_an_empty_bundle_dir_is_refused_not_read_as_the_working_directory(tmp_path, monkeypatch):
    """Path('') is Path('.'): no bundle there, so the worker silently fell back to the heuristic."""
    monkeypatch.setenv("SYNC_SCORER_SCORING__BUNDLE_DIR", "")
    with pytest.raises(ConfigError, match="scoring.bundle_dir: must not be empty"):
        load_config()
    monkeypatch.delenv("SYNC_SCORER_SCORING__BUNDLE_DIR")
    path = tmp_path / "b.yaml"
    path.write_text("scoring: {bundle_dir: '  '}")
    with pytest.raises(ConfigError, match="scoring.bundle_dir: must not be empty"):
        load_config(path)
    path.write_text("scoring: {bundle_dir: /models/b1}")
    assert str(load_config(path).scoring.bundle_dir) == "/models/b1"


def test_scoring_threads_says_what_lanes_for_does():
    from worker.config import ScoringConfig

    desc = ScoringConfig.model_fields["scoring_threads"].description
    assert ScoringConfig().lanes_for("cpu") == ScoringConfig().lanes_for("cuda") == 1
    assert "one per core" not in desc and "default: 1" in desc


@pytest.mark.parametrize("value, reason", [
    ('{"foo.bar": 1}', 'No such configuration property: "foo.bar"'),
    ('{"security.protocol": "bogus"}', 'Invalid value "bogus" for configuration property "security.protocol"'),
])
@pytest.mark.parametrize("cmd", [["worker"], ["worker", "--create-topics"], ["replay", "--session", "x"]])
def test_librdkafka_settings_no_client_takes_are_one_config_error_line(value, reason, cmd):
    """They reached librdkafka only when the first client was built: replay and --create-topics
    printed KafkaException's traceback, the plain worker logged 13 lines and exited 1 (other config
    errors exit 3)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_SCORER_")}
    env.update(SYNC_SCORER_KAFKA__LIBRDKAFKA=value, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
               SYNC_SCORER_KAFKA__STARTUP_TIMEOUT_MS="1000", SYNC_SCORER_HTTP__PORT="0")
    proc = subprocess.run([sys.executable, "-m", "worker.cli", *cmd, "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "" and proc.stderr == f"error: invalid config: kafka.librdkafka: {reason}\n"


def test_the_client_check_names_the_section_and_masks_secrets(monkeypatch):
    from worker.kafka.admin import check_client_config

    sasl = '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u"}'
    monkeypatch.setenv("SYNC_SCORER_KAFKA__LIBRDKAFKA", sasl)
    with pytest.raises(ConfigError, match="kafka.librdkafka: sasl.username and sasl.password must be set"):
        check_client_config(load_config().kafka)
    monkeypatch.setenv("SYNC_SCORER_KAFKA__SECRETS", '{"sasl.password": "hunter2"}')
    check_client_config(load_config().kafka)  # together they make a client
    monkeypatch.setenv("SYNC_SCORER_KAFKA__CONSUMER", '{"auto.offset.reset": "sideways"}')
    with pytest.raises(ConfigError, match='kafka.consumer: Invalid value "sideways"'):
        check_client_config(load_config().kafka)
    monkeypatch.delenv("SYNC_SCORER_KAFKA__CONSUMER")
    monkeypatch.setenv("SYNC_SCORER_KAFKA__PRODUCER", '{"acks": "x"}')  # an alias: its real name is quoted
    with pytest.raises(ConfigError, match="kafka.producer: Invalid value"):
        check_client_config(load_config().kafka)
    monkeypatch.delenv("SYNC_SCORER_KAFKA__PRODUCER")
    monkeypatch.setenv("SYNC_SCORER_KAFKA__SECRETS", '{"sasl.password": "hunter2", "ssl.key.password": "x"}')
    monkeypatch.setenv("SYNC_SCORER_KAFKA__LIBRDKAFKA", '{"security.protocol": "hunter2"}')
    with pytest.raises(ConfigError) as info:
        check_client_config(load_config().kafka)
    assert "kafka.librdkafka" in str(info.value) and "hunter2" not in str(info.value)


def test_the_client_check_sends_no_oidc_token_request(monkeypatch):
    """librdkafka fetches an OIDC token as soon as a client is built: the config check built two
    and sent the client's id and secret to the token endpoint twice per start (a re-review)."""
    import http.server
    import threading
    import time

    from worker.kafka.admin import check_client_config

    hits = []

    class Token(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        oidc = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.client.id": "x", "sasl.oauthbearer.client.secret": "s3cr3t",
                "sasl.oauthbearer.token.endpoint.url": f"http://127.0.0.1:{server.server_address[1]}/token"}
        monkeypatch.setenv("SYNC_SCORER_KAFKA__LIBRDKAFKA", json.dumps(oidc))
        check_client_config(load_config().kafka)
        time.sleep(1.0)  # a token request, had one been sent, arrives within milliseconds
        assert hits == []
    finally:
        server.shutdown()
        server.server_close()

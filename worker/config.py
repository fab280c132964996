"""The worker's one typed configuration: defaults < YAML file (``--config``) < environment.

Environment variables use the prefix ``SYNC_SCORER_`` and ``__`` between nesting levels, e.g.
``SYNC_SCORER_WINDOWING__BLOCK_FRAMES=8`` or
``SYNC_SCORER_KAFKA__LIBRDKAFKA='{"security.protocol": "SASL_SSL"}'`` (dicts and lists as JSON).
``KAFKA_BOOTSTRAP_SERVERS``, the variable every other tool of the project honours, overrides
``kafka.bootstrap_servers`` last.

Secrets (``kafka.secrets``, and any librdkafka key that names a password or secret) are
``SecretStr``: they print as ``**********`` and are revealed only when the Kafka client config is
built (:meth:`KafkaConfig.client_config`). The environment is read only here, at the edge.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "SYNC_SCORER_"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"

# SYNC_SCORER_* variables that are not config settings: read by other parts of the project
# (worker.kafka.broker.DOCKER_ENV), so not refused as misspelled settings
OTHER_ENV_NAMES = frozenset({"SYNC_SCORER_KAFKA_DOCKER"})
# Kubernetes gives every pod variables for the Services in its namespace (service links): a
# Service named sync-scorer-serve gives SYNC_SCORER_SERVE_SERVICE_HOST, SYNC_SCORER_SERVE_PORT,
# SYNC_SCORER_SERVE_PORT_8080_TCP_ADDR, ... They are not settings, and refusing them would stop
# every worker pod of a release named sync-scorer (the chart also turns service links off).
_SERVICE_LINK_SUFFIX = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)"
                                  r"(_(PROTO|PORT|ADDR))?)?)")


def _service_link(name: str, services: set[str]) -> bool:
    """Whether ``name`` is one of Kubernetes' variables for a service it linked (``services``:
    the prefixes of the <SERVICE>_SERVICE_HOST variables set)."""
    return any(name.startswith(svc) and _SERVICE_LINK_SUFFIX.fullmatch(name[len(svc):]) for svc in services)

# librdkafka keys whose values are credentials; given in `librdkafka` they are moved to `secrets`.
_SECRET_KEY_MARKERS = ("password", "secret", "sasl.jaas.config", "ssl.key.pem", "ssl_key")

LibrdkafkaValue = str | int | float | bool


class ConfigError(ValueError):
    """A configuration that cannot be used (bad file, bad value): the message says which."""


class _Section(BaseModel):
    # inf and NaN are no settings (a review: scoring.max_wait_ms .inf and the silence threshold
    # .inf were taken)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TopicConfig(_Section):
    name: str = Field(min_length=1)
    partitions: int = Field(default=6, ge=1, description="Partition count used when creating it.")
    replication_factor: int = Field(default=1, ge=1)


class TopicsConfig(_Section):
    audio: TopicConfig = TopicConfig(name="av.audio-chunks")
    roi: TopicConfig = TopicConfig(name="av.roi-refs")
    signals: TopicConfig = TopicConfig(name="av.lipsync-signals")
    dlq: TopicConfig = TopicConfig(name="av.lipsync-dlq", partitions=1)

    @model_validator(mode="before")
    @classmethod
    def _keep_defaults(cls, data: Any) -> Any:
        """A topic given in part (``audio: {partitions: 12}``, or SYNC_SCORER_KAFKA__TOPICS__AUDIO__
        PARTITIONS) keeps the defaults of the fields it leaves out, its name above all: it was
        refused ("name: Field required"), and a worker deployed with it crash-looped."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, field in cls.model_fields.items():
            given = out.get(key)
            if isinstance(given, dict):
                out[key] = {**field.default.model_dump(), **given}
        return out

    @model_validator(mode="after")
    def _co_partitioned(self) -> TopicsConfig:
        # The join needs both inputs of one session on the same worker: same partition counts.
        if self.audio.partitions != self.roi.partitions:
            raise ValueError(
                f"input topics must be co-partitioned: audio has {self.audio.partitions} partitions, "
                f"roi has {self.roi.partitions}"
            )
        if self.audio.name == self.roi.name:
            raise ValueError("audio and roi topics must differ")
        return self

    def inputs(self) -> tuple[str, str]:
        return (self.audio.name, self.roi.name)

    def all(self) -> tuple[TopicConfig, ...]:
        return (self.audio, self.roi, self.signals, self.dlq)


class KafkaConfig(_Section):
    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1, pattern=r"\S")
    group_id: str = "sync-scorer"
    topics: TopicsConfig = TopicsConfig()
    # Any librdkafka setting, given to consumer, producer and admin client alike (SASL/SSL here).
    librdkafka: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    consumer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    producer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    # librdkafka settings that are credentials (e.g. sasl.password); never logged.
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    wire_format: Literal["schemaless", "confluent"] = "schemaless"
    schema_registry_url: str | None = None
    create_topics: bool = Field(default=False, description="Create missing topics at start.")
    consume_batch: int = Field(default=500, ge=1, description="num_messages per consume() call.")
    poll_timeout_ms: int = Field(default=5, ge=0, description="consume() waits this long for a full batch.")
    commit_interval_ms: int = Field(default=1000, ge=0)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    startup_timeout_ms: int = Field(
        default=60_000, ge=1000, description="The worker exits (non-zero, one line) when no broker "
        "answers within this long of starting; an orchestrator restarts it. Later outages are waited out."
    )

    @model_validator(mode="after")
    def _registry_for_wire_format(self) -> KafkaConfig:
        if self.wire_format == "confluent" and not self.schema_registry_url:
            raise ValueError("wire_format confluent needs schema_registry_url")
        return self

    @model_validator(mode="before")
    @classmethod
    def _move_secrets(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        # a section that is not a mapping (SYNC_SCORER_KAFKA__SECRETS=12345, `librdkafka: [1, 2]`)
        # is left as it is for the field's own check to refuse in one line ("must be a mapping");
        # dict() of it here raised TypeError, a traceback past the config error handling
        sections = ("secrets", "librdkafka", "consumer", "producer")
        if any(data.get(s) is not None and not isinstance(data.get(s), Mapping) for s in sections):
            return data
        secrets = dict(data.get("secrets") or {})
        for section in ("librdkafka", "consumer", "producer"):
            settings = dict(data.get(section) or {})
            for key in list(settings):
                if any(marker in key.lower() for marker in _SECRET_KEY_MARKERS):
                    secrets[key] = str(settings.pop(key))
            data[section] = settings
        data["secrets"] = secrets
        return data

    def codec(self, name: str, topic: str) -> Any:
        """The Avro codec for record type ``name`` on ``topic`` in this cluster's wire format (the
        worker's and the replay's: the Confluent framing with the registry, or plain bodies)."""
        from schemas import AvroCodec, codec_for

        if self.wire_format == "confluent":
            return codec_for(name, wire="confluent", registry={"url": self.schema_registry_url}, topic=topic)
        return AvroCodec(name)

    def client_config(self, role: Literal["consumer", "producer", "admin"]) -> dict[str, Any]:
        """The librdkafka dict for one client, secrets revealed. Never log the result."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.librdkafka)
        if role == "consumer":
            conf.update(self.consumer)
        elif role == "producer":
            conf.update(self.producer)
        conf.update({key: value.get_secret_value() for key, value in self.secrets.items()})
        return conf


class WindowingConfig(_Section):
    block_frames: int = Field(default=16, ge=8, le=16, description="Frames per BLOCK job.")
    window_ms: int = Field(default=1000, ge=800, le=1200, description="Length of a WINDOW job.")
    window_hop_ms: int = Field(default=1000, ge=100, le=5000, description="WINDOW every ~hop.")
    allowed_lateness_ms: int = Field(
        default=1000, ge=0, description="How far the session's event time may pass a job before "
        "it is scored with whatever arrived (gaps labelled)."
    )
    idle_timeout_ms: int = Field(default=10_000, ge=100, description="Processing-time session end.")
    stream_stall_ms: int = Field(
        default=2000, ge=0, description="A stream silent this long (processing time) while the "
        "other flows is treated as late: jobs go with its part labelled missing."
    )
    max_sessions: int = Field(default=1000, ge=1)
    max_buffered_ms: int = Field(default=10_000, ge=2000, description="Per-session buffer bound.")
    closed_sessions_remembered: int = Field(default=10_000, ge=0)

    @model_validator(mode="after")
    def _buffer_fits_a_window(self) -> WindowingConfig:
        if self.max_buffered_ms < self.window_ms + self.allowed_lateness_ms:
            raise ValueError("max_buffered_ms must be at least window_ms + allowed_lateness_ms")
        return self


class ScoringConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int | None = Field(
        default=None, ge=1, description="Jobs per scoring batch (default: 32 on CUDA, 8 on CPU, where "
        "bigger batches barely raise throughput but hold every job of the batch longer).")
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_queued_jobs: int = Field(default=256, ge=1, description="Pause consuming above this.")
    resume_queued_jobs: int | None = Field(default=None, ge=0, description="Resume at or below "
                                           "this (default: half of max_queued_jobs).")
    bundle_dir: Path | None = Field(default=None, description="Model bundle directory (unset: the bundled model).")
    silence_rms_threshold: float | None = Field(default=None, ge=0)
    narrowband: bool = Field(
        default=True, description="Score jobs whose audio is telephone-band (nothing above about "
        "4 kHz) with the bundle's narrowband/ model, where it has one.")
    max_offset_ms: float = Field(
        default=200.0, ge=40, le=1000, description="Offsets searched: -max_offset_ms..+max_offset_ms "
        "in steps of one frame. Wider finds larger offsets, at the price of more audio held per job "
        "(the search margin) and a little more chance that unrelated lips and audio find a peak."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU threads for the scorer (default: cores - 1, at "
        "most 4, at least 1: the poll loop needs a core, and oversubscribed OpenMP threads are "
        "dramatically slower than one)."
    )

    scoring_threads: int | None = Field(
        default=None, ge=1, le=64, description="Scorers running side by side (lanes), sessions split "
        "between them, each with torch_threads // scoring_threads CPU threads (default: 1 on every "
        "device; more lanes pay off only with cores to spare beyond the poll loop)."
    )

    @field_validator("bundle_dir", mode="before")
    @classmethod
    def _bundle_dir_not_empty(cls, value: Any) -> Any:
        # Path("") is Path("."): the working directory, which holds no bundle, so the worker fell
        # back to the heuristic scorer without a word from the config (SYNC_SCORER_SCORING__BUNDLE_DIR='')
        if isinstance(value, str | Path) and not str(value).strip():
            raise ValueError("must not be empty (leave it unset for the bundled model)")
        return value

    def lanes_for(self, device: str) -> int:
        if self.scoring_threads is not None:
            return self.scoring_threads
        return 1

    def cpu_threads(self) -> int:
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, min(4, available_cores() - 1))

    def batch_size_for(self, device: str) -> int:
        if self.max_batch_size is not None:
            return self.max_batch_size
        return 32 if device.startswith("cuda") else 8

    @property
    def resume_below(self) -> int:
        if self.resume_queued_jobs is None:
            return self.max_queued_jobs // 2
        return min(self.resume_queued_jobs, self.max_queued_jobs)


class RefsConfig(_Section):
    allowed_file_roots: tuple[Path, ...] = ()
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    outage_hold_s: float = Field(
        default=30.0, ge=0.0, le=600.0,
        description="A ROI store that is down has its references' partitions held this long (read when it "
                    "answers again) before their frames count as missing; 0: missing at once.")


class HttpConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535, description="0 disables the HTTP server.")


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = True


def available_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: the machine's, cut by its CPU affinity and by a cgroup v2 CPU
    quota (a container's CPU limit). os.cpu_count() alone counts the node's cores, so a 2-CPU pod
    on a 32-core node started 4 scoring threads that then fought over its quota."""
    cores = os.cpu_count() or 2
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)) or cores)
    try:
        with open(cgroup_cpu_max, encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, -(-int(quota) // int(period))))  # ceil
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible: not in a limited container
    return max(1, cores)


class WorkerConfig(BaseSettings):
    """Everything the worker needs; see the module docstring for the sources' precedence."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaConfig = KafkaConfig()
    windowing: WindowingConfig = WindowingConfig()
    scoring: ScoringConfig = ScoringConfig()
    refs: RefsConfig = RefsConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    instance_id: str = Field(default_factory=lambda: f"{os.uname().nodename}/{os.getpid()}")
    shutdown_timeout_ms: int = Field(
        default=45_000, ge=1000, description="After SIGTERM the worker drains, publishes, flushes and "
        "commits; past this it exits anyway (uncommitted input is read again by the next owner: nothing "
        "is lost). Keep it under the pod's terminationGracePeriodSeconds."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it (Kubernetes
        # overrides a baked-in file with env), so env comes first.
        return (env_settings, init_settings)

    @field_validator("instance_id")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("instance_id must not be empty")
        return value

    def redacted(self) -> dict[str, Any]:
        """A dict safe to log: secrets stay masked."""
        return self.model_dump(mode="json")


def load_config(path: str | Path | None = None) -> WorkerConfig:
    """Build the config from an optional YAML file plus the environment.

    Raises ConfigError with a one-line reason for an unreadable file or an invalid value.
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        file_values = loaded
    _refuse_unknown_env_names(os.environ)
    try:
        config = WorkerConfig(**file_values)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(_one_line(exc)) from None
    bootstrap = os.environ.get(BOOTSTRAP_ENV)
    if bootstrap and not bootstrap.strip():
        # blank but set: not "no cluster" (unset or empty is), and no broker list either
        raise ConfigError(f"{BOOTSTRAP_ENV} is blank: unset it (local broker) or name the brokers")
    if bootstrap:
        kafka = config.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        config = config.model_copy(update={"kafka": kafka})
    return config


def _refuse_unknown_env_names(environ: Mapping[str, str]) -> None:
    """A SYNC_SCORER_* variable that names no setting is an error, as a misspelled nested one is
    (pydantic refuses SYNC_SCORER_WINDOWING__BLOK): the settings source reads only the names it
    knows, so SYNC_SCORER_SHUTDOWN_TIMEOUTMS=2000 was ignored without a word."""
    sections = set(WorkerConfig.model_fields)
    # Kubernetes sets <SERVICE>_SERVICE_HOST for every service it links: only names of those
    # services pass, so SYNC_SCORER_HTTP_PORT (one underscore short of http.port) is still refused
    services = {name.upper()[: -len("_SERVICE_HOST")] for name in environ if name.upper().endswith("_SERVICE_HOST")}
    unknown = sorted(
        name for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in OTHER_ENV_NAMES
        and name.upper()[len(ENV_PREFIX):].split("__", 1)[0].lower() not in sections
        and not _service_link(name.upper(), services)
    )
    if unknown:
        raise ConfigError(
            f"invalid config: {', '.join(unknown)}: no such setting (SYNC_SCORER_<NAME> or "
            f"SYNC_SCORER_<SECTION>__<KEY>, NAME/SECTION one of {', '.join(sorted(sections))})"
        )


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if "EnvSettingsSource" in text:
        # a SYNC_SCORER_<SECTION>__<KEY> value that is not valid JSON (dicts and lists are): name it
        field = text.split('field "', 1)[1].split('"', 1)[0] if 'field "' in text else ""
        prefix = f"{ENV_PREFIX}{field}__".upper()
        names = sorted(k for k in os.environ if k.upper().startswith(prefix))
        if names:
            return f"invalid config: {', '.join(names)}: not valid JSON for a mapping or list value ({text})"
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts: list[str] = []
        for err in errors():
            loc = tuple(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg")).removeprefix("Value error, ")
            if err.get("type") in ("dict_type", "model_type", "model_attributes_type"):
                msg = f"must be a mapping, got {_type_name(err.get('input'))}"
            elif loc and loc[-1] in _SCALAR_UNION_TAGS:
                # one librdkafka value that is none of str/int/float/bool: pydantic reports each
                # member of the union; say it once
                loc, msg = loc[:-1], f"must be a string, number or boolean, got {_type_name(err.get('input'))}"
            part = f"{'.'.join(loc) or 'config'}: {msg}"
            if part not in parts:
                parts.append(part)
        return "invalid config: " + "; ".join(parts)
    return "invalid config: " + " ".join(str(exc).split())


_SCALAR_UNION_TAGS = ("str", "int", "float", "bool")


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)

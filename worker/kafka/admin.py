"""Topic administration: create topics with the partition counts the config names, and check them.

Co-partitioned inputs rely on equal partition counts, so an existing topic with a different
count is an error here, never silently "fixed" (adding partitions would move sessions' keys).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from worker.kafka.logs import with_logger


class TopicError(RuntimeError):
    """A topic could not be created, or exists with the wrong partition count."""


def check_client_config(kafka: Any) -> None:
    """Refuse librdkafka settings no client would take (``kafka``: a worker.config.KafkaConfig):
    an unknown property, a bad value, SASL without its credentials. Each role's client is built
    without a bootstrap address, so no broker is contacted; librdkafka's own words name the
    problem. Not with OAUTHBEARER's OIDC method, whose clients fetch a token when built.

    Raises ConfigError ``invalid config: kafka.<section>: <reason>``, secrets masked. Without
    this, the first client the worker, replay or ``--create-topics`` built raised KafkaException:
    a traceback, and from the worker exit 1 where every other config error exits 3."""
    from confluent_kafka import Consumer, Producer

    from worker.config import ConfigError

    if str(kafka.client_config("admin").get("sasl.oauthbearer.method", "")).lower() == "oidc":
        # librdkafka fetches an OIDC token as soon as a client is built: checking would send the
        # client's credentials to the token endpoint twice per start (a re-review). Such settings
        # are checked by the worker's own clients when they start.
        return
    roles: tuple[tuple[str, Any], ...] = (("producer", Producer), ("consumer", Consumer))
    for role, client in roles:
        reason = _refused(client, kafka.client_config(role))
        if reason is None:
            continue
        section = _section_naming(kafka, reason)
        if section is None:
            # no property named: the role's own settings if the shared ones alone are fine
            own = getattr(kafka, role)
            section = role if own and _refused(client, kafka.client_config("admin")) is None else "librdkafka"
        for secret in kafka.secrets.values():
            if secret.get_secret_value():
                reason = reason.replace(secret.get_secret_value(), "**********")
        raise ConfigError(f"invalid config: kafka.{section}: {reason}")


def _refused(client: Any, conf: Mapping[str, Any]) -> str | None:
    """librdkafka's reason for refusing ``conf`` for ``client`` (Producer, Consumer), else None."""
    conf = {k: v for k, v in conf.items() if k != "bootstrap.servers"}  # build only, never connect
    conf["log_level"] = 0  # and say nothing (no brokers configured is fine here)
    if client.__name__ == "Consumer":
        conf.setdefault("group.id", "sync-scorer-config-check")
    try:
        handle = client(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        for prefix in ("Failed to create producer: ", "Failed to create consumer: "):
            text = text.removeprefix(prefix)
        return " ".join(text.split())
    except (TypeError, ValueError) as exc:  # confluent_kafka's own checks of the dict
        return " ".join(str(exc).split())
    if client.__name__ == "Consumer":
        handle.close()
    return None


def _section_naming(kafka: Any, reason: str) -> str | None:
    """The config section holding the property ``reason`` quotes (librdkafka: ...property "x")."""
    import re

    named = set(re.findall(r'"([^"]+)"', reason))
    for section in ("consumer", "producer", "secrets", "librdkafka"):
        if named & set(getattr(kafka, section)):
            return section
    return None


def admin_client(bootstrap: str, client_config: Mapping[str, Any] | None = None) -> AdminClient:
    """An AdminClient for ``bootstrap``; ``client_config`` adds any librdkafka setting (SASL/SSL)."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap}
    conf.update(client_config or {})
    return AdminClient(with_logger(conf))


def wait_until_reachable(
    bootstrap: str, timeout_s: float = 30.0, client_config: Mapping[str, Any] | None = None
) -> None:
    """Return once the cluster answers a metadata request; ``TopicError`` after ``timeout_s``."""
    admin = admin_client(bootstrap, client_config)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except KafkaException as e:
            last = e
            time.sleep(0.2)
    raise TopicError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last}")


def topic_partitions(
    bootstrap: str, topics: list[str] | tuple[str, ...], *, timeout_s: float = 10.0,
    client_config: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Partition count of each existing topic among ``topics`` (missing topics are left out)."""
    return _partition_counts(admin_client(bootstrap, client_config), list(topics), timeout_s)


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    client_config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, bool]:
    """Create each missing topic of ``{name: partitions}`` and wait until all have leaders.

    Args:
        config: topic configs for the topics created here (e.g. ``{"retention.ms": "3600000"}``);
            existing topics keep theirs.
        replication_factor: 1 for the local broker; 3 on a real cluster.
        client_config: extra librdkafka settings (SASL/SSL) for the admin client.

    Returns ``{name: created}`` (False for topics that already existed with the right count).
    Raises ``TopicError`` if a topic exists with a different partition count or cannot be created.
    """
    for name, partitions in topics.items():
        if not name or int(partitions) < 1:
            raise TopicError(f"bad topic request {name!r}: {partitions} partitions")
    admin = admin_client(bootstrap, client_config)
    existing = _partition_counts(admin, list(topics), timeout_s)
    wrong = {n: (existing[n], p) for n, p in topics.items() if n in existing and existing[n] != p}
    if wrong:
        detail = ", ".join(f"{n} has {have} partitions, config says {want}" for n, (have, want) in wrong.items())
        raise TopicError(f"existing topics do not match the config: {detail}")

    missing = [n for n in topics if n not in existing]
    created = {n: False for n in topics}
    if missing:
        new = [
            NewTopic(n, num_partitions=int(topics[n]), replication_factor=replication_factor,
                     config=dict(config or {}))
            for n in missing
        ]
        for name, future in admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created[name] = True
            except KafkaException as e:
                err = e.args[0] if e.args else None
                # Another worker may have created it a moment ago: fine if the count matches.
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise TopicError(f"cannot create topic {name!r}: {e}") from e
    _wait_for_leaders(admin, topics, timeout_s)
    return created


def _partition_counts(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise TopicError(f"cannot list topics: {e}") from e
    out: dict[str, int] = {}
    for name in names:
        meta = metadata.topics.get(name)
        if meta is not None and meta.error is None:
            out[name] = len(meta.partitions)
    return out


def _wait_for_leaders(admin: AdminClient, topics: Mapping[str, int], timeout_s: float) -> None:
    # create_topics returns once the controller accepted; a client that produces right away can
    # still see UNKNOWN_TOPIC_OR_PART until every partition has a leader. Wait for that here.
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s)
        pending = []
        for name, partitions in topics.items():
            meta = metadata.topics.get(name)
            if meta is None or meta.error is not None or len(meta.partitions) != partitions or any(p.leader < 0 or p.error is not None for p in meta.partitions.values()):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not ready after {timeout_s:.0f}s: {', '.join(pending)}")
        time.sleep(0.1)


def delete_topics(
    bootstrap: str, names: list[str], *, timeout_s: float = 30.0, client_config: Mapping[str, Any] | None = None
) -> None:
    """Delete topics (tests and tooling); missing topics are ignored."""
    if not names:
        return
    admin = admin_client(bootstrap, client_config)
    for name, future in admin.delete_topics(list(names), operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise TopicError(f"cannot delete topic {name!r}: {e}") from e

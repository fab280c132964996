"""The worker's Kafka boundary: its consumer, producer, admin and plain clients (replay keeps its
own reader in worker/replay/source.py; schemas/codec.py imports the schema-registry client lazily).

``broker`` (where a bootstrap address comes from: env, testcontainers or the local broker) and
``admin`` (topics). Import the submodules directly; this package imports nothing, so
``worker.kafka.broker`` stays importable without librdkafka.
"""

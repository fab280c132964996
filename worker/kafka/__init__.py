"""The Kafka boundary: the only package that imports confluent_kafka.

``broker`` (where a bootstrap address comes from: env, testcontainers or the local broker) and
``admin`` (topics). Import the submodules directly; this package imports nothing, so
``worker.kafka.broker`` stays importable without librdkafka.
"""

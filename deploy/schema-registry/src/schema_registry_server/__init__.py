"""A small, persistent, Confluent-API-compatible schema registry for Avro, backed by a Kafka topic."""

__version__ = "0.1.0"

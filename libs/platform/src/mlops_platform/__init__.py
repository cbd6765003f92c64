"""Shared plumbing of the MLOps constellation.

Every service uses these modules instead of re-implementing them:

- :mod:`mlops_platform.settings` — typed connection settings mapped to client configs
- :mod:`mlops_platform.contracts` — topic catalogue, value schemas, event envelope
- :mod:`mlops_platform.serde` — Avro serde over the schema registry
- :mod:`mlops_platform.kafka` — idempotent producer, consumer loop with dead letters,
  transactional consume-transform-produce loop, admin helpers
- :mod:`mlops_platform.logs` — structlog JSON logging with correlation ids
- :mod:`mlops_platform.metrics` — Prometheus metrics every service exports
- :mod:`mlops_platform.http` — FastAPI app factory with lifespan, /health, /ready, /metrics
"""

__version__ = "0.1.0"

"""Fraud-detection model library: transaction contract, features, synthetic data,
FDS metrics, XGBoost training with MLflow logging, and the alias-based registry.

Submodules are imported explicitly (``from fraud_model.features import build_features``)
so that light users such as the ingest service do not pay for importing MLflow.
"""

__all__ = ["contract", "features", "generator", "metrics", "registry", "training"]

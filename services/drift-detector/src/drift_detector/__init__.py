"""Drift detector: streaming PSI, Evidently reports, live model quality and A/B evaluation."""

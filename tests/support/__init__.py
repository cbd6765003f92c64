"""Helpers shared by integration and end-to-end tests (service processes, models, proxies)."""

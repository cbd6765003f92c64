"""Helpers shared by integration and end-to-end tests: service processes, topic readers, models,
alert sinks and proxies. The only place in the test tree that spawns services, picks ports,
collects records from topics or reads ``/metrics``."""

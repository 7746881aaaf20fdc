"""Alerting: rule files, the Prometheus alert state machine, Alertmanager-style routing, receivers."""

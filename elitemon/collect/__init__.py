"""Collection: node monitors and their controller (and, next, the Tune callback)."""

from elitemon.collect.controller import start_monitoring

__all__ = ["start_monitoring"]

"""elitemon: Ray-native monitoring and analytics for Population-Based Training.

The client and `report` functions are imported on first use, so that the parts without Ray (the
analytics, the holomorphic kernel) import on machines that have no Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "elitemon.client",
    "connect": "elitemon.client",
    "flush": "elitemon.reporting",
    "report": "elitemon.reporting",
    "report_exploit": "elitemon.reporting",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'elitemon' has no attribute {name!r}")

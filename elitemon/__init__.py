"""elitemon: Ray-native monitoring and analytics for Population-Based Training."""

__version__ = "0.1.0"

from elitemon.client import Client, connect
from elitemon.report import flush, report, report_exploit

__all__ = ["Client", "connect", "flush", "report", "report_exploit", "__version__"]

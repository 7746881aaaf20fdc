"""elitemon: Ray-native monitoring and analytics for Population-Based Training."""

__version__ = "0.1.0"

from elitemon.client import Client, connect

__all__ = ["Client", "connect", "__version__"]

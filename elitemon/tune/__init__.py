"""Ray Tune integration: `MonitorCallback`, one line in `tune.RunConfig(callbacks=[...])`."""

from elitemon.tune._callback import MonitorCallback
from elitemon.tune._exploits import VERIFIED_RAY_VERSIONS, Exploit

__all__ = ["VERIFIED_RAY_VERSIONS", "Exploit", "MonitorCallback"]

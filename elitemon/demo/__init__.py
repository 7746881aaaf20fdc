"""`elitemon demo`: a real PBT run of tabular Q-learning agents, monitored by elitemon."""

from elitemon.demo._qlearning import (
    ENVIRONMENTS,
    AgentSettings,
    Evaluation,
    Hyperparameters,
    QLearner,
    QLearningTrainable,
)
from elitemon.demo._run import DemoSettings, Summary, best_by_generation, run_demo, summarize

__all__ = [
    "ENVIRONMENTS",
    "AgentSettings",
    "DemoSettings",
    "Evaluation",
    "Hyperparameters",
    "QLearner",
    "QLearningTrainable",
    "Summary",
    "best_by_generation",
    "run_demo",
    "summarize",
]

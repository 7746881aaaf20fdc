"""Alerting: rule files, the Prometheus alert state machine, Alertmanager-style routing, receivers.

One module per job, imported directly:
- `expr`: the threshold language (a parser with three-valued logic; never `eval`);
- `rules`: rule files in YAML, every problem located by line and column;
- `signals`: the names a threshold reads, computed from the store's samples;
- `state`: the state machine (inactive → pending → firing → resolved), one instance per label set;
- `routing`, `silences`: Alertmanager's route tree and groups; silences, acknowledgements, inhibition;
- `receivers`, `delivery`: Slack, email, PagerDuty, webhook and ntfy; retries and the delivery log;
- `service`: all of the above wired together, without Ray;
- `evaluator`: the actor that runs a rule file against the store (`start_alerts`);
- `commands`: `elitemon alerts ...`.
"""

"""Analytics: pure functions over the stored tables (pandas in, plain results out, no Ray inside).

One module per question, imported directly (each pulls in only what it needs):
- `population`: score distribution (now and per generation), target achievement, training throughput;
- `diversity`: the hyperparameter diversity index, per parameter and overall, and its collapse;
- `convergence`: improvement per generation, stall length, and the forecast of time to convergence;
- `population_forecast`: each agent's and the mean's score forecast from where the population stands;
- `best_forecast`: the population's best score towards a target, from its recent maximum;
- `migration`: exploit effectiveness, migration success and latency, lineage;
- `importance`: hyperparameter/metric correlations and permutation importance;
- `anomaly`: streaming anomaly detectors with expected value and band;
- `cost`: price table, cost so far, hourly cost, ROI, budget burn;
- `scaling`: bottleneck, measured scaling efficiency, the nodes for a target throughput.
"""

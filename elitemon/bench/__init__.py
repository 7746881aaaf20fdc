"""Benchmarks that elitemon runs on the user's hardware: the holomorphic (analytic-signal) kernel."""

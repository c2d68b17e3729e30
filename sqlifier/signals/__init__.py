"""Signals: what the agent measures, fed into the engine's series store every second.

Module by module:

    samplers.py    each tick: process trees (cpu, memory) with psutil, the router's
                   counters (rps, errors, latency by track), log lines by level, restarts
    prometheus.py  `prometheus('...')` signals: instant queries to a Prometheus server
    totals.py      the router's counters for `/metrics`, monotonic across data plane restarts
    slo.py         the router's counters per objective: burn_rate(W) and error_budget()
    exposition.py  the agent's `/metrics` in Prometheus' text format

The series store itself (`engine/series.py`) is pure and belongs to the engine; the
catalogue of built-in signal names and their types is `lang/signals.py`, because the
checker needs it.
"""

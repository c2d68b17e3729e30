"""The rule engine: one pure state machine per rule and service, driven by a clock it is
handed, never one it reads.

    series.py       the series store: levels with staleness, events counted in windows
    compiled.py     rules made ready to evaluate: signal tests, trigger trees, shown values
    expressions.py  IF conditions, SCALE expressions, NOTIFY / RUN placeholders
    state.py        the values: rule states, decisions, commands, settings
    evaluation.py   a rule's tests at one tick, and its window
    actions.py      a firing's actions planned: SCALE within LIMIT, ROLLBACK, messages
    machine.py      the Engine: `tick(now, world)` -> decisions and commands; `complete()`
    wording.py      values and times in reasons
    persist.py      the state saved across agent restarts (engine.json)
    explain.py      `rules status` and `rules explain`
    replay.py       the world of `rules test` and `rules backtest`: samples, a virtual clock
    slo.py          service level objectives: burn rates and budgets from good/total counts

Nothing here does I/O except `replay.py`, which reads the sample files it replays. The
agent runs the commands the engine returns (the edge: runtime, platform, webhooks); the
contract in pyproject.toml keeps asyncio, sockets, subprocesses and the edges out.
"""

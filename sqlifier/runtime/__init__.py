"""The runtime: a stack's services as supervised local processes.

Module by module:

    supervisor.py  which instances there are: services in dependency order, scale,
                   restart, canaries beside the stable ones, promotion, retiring
    runner.py      running them: launch, probes, restarts and stops on one asyncio loop
    instance.py    what is known about one instance; the events and errors about them
    lifecycle.py   the life of one instance, a pure state machine driven by events
    process.py     starting and stopping one process group, capturing what it writes
    fence.py       what keeps an instance in: its network namespace and its account
    netns.py       network namespaces, the stack's bridge and nftables egress rules
    users.py       running as another account: dropping to it, handing files over
    probes.py      when a probe is due, what its thresholds make of results, running one
    logs.py        log lines: their level, the log files, the raw output followed
    private.py     a private folder for what must never be written under `.sqlifier/`
    commands.py    RUN: a one-off command of a rule's action or a deploy
    cgroups.py     limits per instance (`resources`) through cgroups, and OOM kills
"""

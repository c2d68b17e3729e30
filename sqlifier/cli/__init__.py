"""The command line: `sqlifier` and `deploy-cli`. Only this package prints and exits.

Module by module:

    main.py       the entry points and `run()`, the one place errors become exit codes
    fasthelp.py   the `sqlifier` entry point: --help, -h, --version answered without click
    helptext.py   those answers, rendered by `python -m sqlifier.cli.fasthelp` (generated)
    options.py    the options commands share (--env, the stack file, --json, --reason)
    workspace.py  which stack file and rule files a command works on
    output.py     diagnostics printed as compiler-style text or as JSON
    check.py      `check`: the stack file and rule files
    fmt.py        `fmt`: rule files in canonical form
    init.py       `init`, with the files scaffold.py writes
    up.py         `up` and `down`: start a stack and stop it
    ps.py         `ps`, `scale`, `restart`: what runs, and changing it
    logs.py       `logs`: what a service's instances wrote
    cluster.py    `plan`, `up`, `down`, `ps`, `logs`, `scale`, `restart` on a Kubernetes
                  environment (each command hands such an environment to it)
    config.py     `config`: a service's effective configuration, secrets masked
    deploy.py     `deploy`, `deploy status`, `approve`, `rollback`, `rollout`
    releases.py   `releases`, `plan`, `dora` and `lock`
    rules.py      `rules`: list, explain, test, backtest, pause, resume
    secret.py     `secret`: the environment's own encrypted secrets
    audit.py      `audit` and `audit verify`
    slo.py        `slo`: objectives, budget left, burn rates
"""

"""The agent: one process per stack and environment that ties everything together.

Module by module:

    server.py        the composition root: builds every component through its
                     constructor, runs the stack, serves the API, stops in order
    __main__.py      `python -m sqlifier.agent`, as `up --detach` starts it
    files.py         the agent's files (socket, token, agent.json, deploy records), read
                     by the CLI without importing the agent
    client.py        the CLI's side of the API: one request per connection (h11)
    api.py           the API: routing table, token, one error shape
    openapi.py       its OpenAPI description, the schema every request is checked against
    requests.py      typed requests, made from bodies checked against that schema
    endpoints.py     what each route does, through the platform, the deployer, the rules
    automation.py    signals every second, the engine, decisions and history
    world.py         the running stack as the engine sees it, read through the platform
    actions.py       the engine's commands carried out: SCALE, RESTART, ROLLBACK, ...
    figures.py       what `/metrics` shows
    webhooks.py      NOTIFY: messages posted to the `[notify]` webhook
    secretsync.py    changed secrets delivered by restarting the instances that use them
    rollouts.py      what the API and the rules need of the deployer, as a Protocol
    deployer.py      deploy, approve, rollout controls and rollback requests, checked
    deploy_record.py one deploy or rollback as the agent carries it, and its record
    executor.py      a rollout's commands carried out through the platform, on one clock
    restarts.py      deploys a previous agent left unfinished: closed, or resumed
    kubernetes.py    the agent of a Kubernetes environment: the same automation on a
                     cluster's platform and signals (`sqlifier agent --env E`)
    kubernetes_requests.py  the CLI's requests to it as ConfigMaps it watches

Everything here above `server.py` reaches instances and traffic through the platform seam
(`sqlifier.platform`); only the composition root knows it is the local one.
"""

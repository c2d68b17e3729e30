"""The Kubernetes platform: an environment's stack as objects on a cluster.

Rendering makes the objects (plain dicts, as their YAML reads); the API layer applies them
with server-side apply (field manager `sqlifier`), shows what an apply would change, prunes
and deletes only what sqlifier owns, and waits until the workloads are ready. The
`kubernetes` client (`sqlifier[kubernetes]`) is imported only when a cluster is used: the
CLI's start-up does not pay for it.

    errors.py            ClusterError and its kinds: unreachable, forbidden, no namespace,
                         conflict, not ready; each names the object and what to do
    api.py               connect (kubeconfig context or in-cluster), the one request path,
                         API errors turned into ClusterErrors
    apply.py             server-side apply, its dry run as per-object differences, prune,
                         delete what sqlifier owns
    wait.py              readiness of Deployments and StatefulSets, naming a pod that is not
                         ready with its events and last log lines
    kubeconfig.py        a plain kubeconfig context read without the client's import
    environment.py       an environment as plan, up and down work on it: secrets filled,
                         apply, prune, wait; delete what sqlifier owns and wait for its pods
    pods.py              the stack's pods as ps rows (state, readiness, restarts, OOM kills,
                         node, release, track); their logs, read or followed, masked
    ops.py               scale (the scale subresource) and restart (a rolling restart)
    render.py            the manifests of an environment, in apply order, and as YAML
    render_common.py     names, labels and metadata every object shares
    render_workloads.py  Deployment or StatefulSet, and Service, per service
    render_routes.py     HTTPRoutes from the services' routes
    render_secrets.py    a Secret per service: its keys rendered, its values filled at apply
    render_agent.py      the agent's Deployment, stack ConfigMap and least-privilege RBAC
    slo_promql.py        SLOs from the Gateway's metrics: their PromQL, counts read back
    slo_rules.py         the Prometheus rules of the SLOs, for render
    locks.py             a lock per service as a Lease: taken optimistically, renewed, stale
    leader.py            two agents, one leader: election with a Lease, on an injected clock
    state.py             the agent's state in ConfigMaps, written only by the leader (fenced)
    audit.py             the hash-chained audit log in ConfigMaps, chunked, never forked
    platform.py          KubernetesPlatform: the platform seam on a cluster (pods, scale,
                         rolling restart, logs)
    podwatch.py          the environment's pods, listed once, then watched
    promql.py            the agent's PromQL: query templates per gateway, the client
    signals.py           what the agent measures every second on a cluster
"""

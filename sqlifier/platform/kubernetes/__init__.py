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
"""

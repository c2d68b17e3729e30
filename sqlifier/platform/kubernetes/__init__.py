"""The Kubernetes platform: the objects an environment's stack becomes on a cluster.

render.py            the manifests of an environment, in apply order, and as YAML
render_common.py     names, labels and metadata every object shares
render_workloads.py  Deployment or StatefulSet, and Service, per service
render_routes.py     HTTPRoutes from the services' routes
render_secrets.py    a Secret per service: its keys rendered, its values filled at apply
render_agent.py      the agent's Deployment, stack ConfigMap and least-privilege RBAC
"""

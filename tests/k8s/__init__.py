"""The Kubernetes test cluster: a real control plane, a fake node, the Gateway API CRDs."""

"""The Kubernetes resources (pydantic models) and CRD generation."""

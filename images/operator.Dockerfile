# syntax=docker/dockerfile:1.7
# The operator image: kopf, TorchX (scheduler clients only) and the torch-free API/spec modules.
# No torch: `pip install .` installs only the runtime dependencies (torch is in the `train` extra).
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/modelfleet/operator:0.1.0 .
#
# Pin the base by digest for releases: docker buildx imagetools inspect python:3.11.14-slim-bookworm
# and build with --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY images/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY modelfleet/ modelfleet/
COPY api/ api/
COPY operator/ operator/
COPY trainer/ trainer/
RUN python -m venv /opt/modelfleet \
 && /opt/modelfleet/bin/pip install --constraint /tmp/constraints.txt . \
 && ! /opt/modelfleet/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelfleet-operator" \
      org.opencontainers.image.description="modelfleet Kubernetes operator (kopf)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/modelfleet /opt/modelfleet
ENV PATH=/opt/modelfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Numeric non-root user (the chart's runAsUser); the root filesystem can stay read-only.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["modelfleet"]
CMD ["operator", "--liveness=http://0.0.0.0:8081/healthz"]

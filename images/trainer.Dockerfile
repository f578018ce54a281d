# syntax=docker/dockerfile:1.7
# The trainer image TorchX runs (`python -m modelfleet.trainer.launch ... -m modelfleet train --spec-json ...`,
# torchrun's launch exiting with the worker's exit code); the operator
# passes it as MODELFLEET_TRAINER_IMAGE. torch is the version pyproject.toml pins (train extra).
#
#   GPU (CUDA 12.8 wheels):  docker build -f images/trainer.Dockerfile -t ghcr.io/modelfleet/trainer:0.1.0 .
#   CPU only (kind, small):  docker build -f images/trainer.Dockerfile \
#                              --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                              -t ghcr.io/modelfleet/trainer:0.1.0-cpu .
#
# The CUDA runtime comes with the torch wheel (nvidia-* packages), so the base is a plain Python of
# exactly the project's version; the node needs only the NVIDIA driver and container toolkit.
# Pin the base by digest for releases (see operator.Dockerfile).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY images/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY modelfleet/ modelfleet/
COPY api/ api/
COPY operator/ operator/
COPY trainer/ trainer/
RUN python -m venv /opt/modelfleet \
 && /opt/modelfleet/bin/pip install --constraint /tmp/constraints.txt \
      --extra-index-url "${TORCH_INDEX_URL}" ".[train]" \
 && /opt/modelfleet/bin/python -c "import torch, modelfleet.trainer.train; print('torch', torch.__version__)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelfleet-trainer" \
      org.opencontainers.image.description="modelfleet trainer (torch, torchrun)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/modelfleet /opt/modelfleet
# The quickstart's data, so its relative data URIs (data/<slice>.parquet) resolve in the pod's
# working directory without object storage. Real instances use s3://, gs:// or a mounted path.
COPY --chown=65532:65532 examples/quickstart/data/ /workspace/data/
ENV PATH=/opt/modelfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
WORKDIR /workspace
# Numeric non-root user: TorchX pods set no runAsUser, so the image's user is the one that runs.
USER 65532:65532
ENTRYPOINT []
CMD ["python", "-m", "modelfleet", "train", "--help"]

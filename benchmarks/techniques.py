"""The technique-effect table: what each technique, at its default params, does to NE on real fleets.

    .venv/bin/python -P benchmarks/techniques.py                          # every technique, 3 seeds
    .venv/bin/python -P benchmarks/techniques.py --techniques ema dropout --seeds 1 2 3 4 5
    .venv/bin/python -P benchmarks/techniques.py --variant ema='{"decay": 0.99}' --variant ema-raw='{"warmup": false}'
    .venv/bin/python -P benchmarks/techniques.py --out benchmarks/results/techniques.md

Fleets (benchmarks/datasets.py): Adult sliced by relationship (the quickstart's 4 models) and MovieLens 100k sliced
by occupation (8 models). Every model trains the base template (the quickstart's: embedding dim 8,
bottom MLP 32-8, dot interaction, over-arch 32-16; Adam lr 0.005, batch 256, 3 epochs), once
without and once with one technique, with the same seed (which also picks the held-out split), in
process (`train(spec)`, no TorchX). The effect of a technique is the relative NE change
(NE_with - NE_without) / NE_without per model and seed; the table gives its mean over all
models x seeds with a 95 % paired bootstrap interval (resampling the models x seeds pairs), the
mean per fleet, and how many pairs improved. Negative is better.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets  # noqa: E402

BASE_ARCHITECTURE = {"embedding": {"dim": 8}, "bottomMlp": [32, 8], "interaction": {"kind": "dot"},
                     "overArch": [32, 16], "tasks": [{"name": "y"}]}
BASE_RECIPE = {"optimizer": "adam", "learningRate": 0.005, "batchSize": 256, "epochs": 3,
               "checkpointEvery": 10**9, "evalBatchSize": 8192}
# task-weighting re-weights the tasks of a multi-task model: on these single-task models its
# default (no weights) changes nothing, so it has no row.
SKIP = {"task-weighting"}


def _train(job: tuple) -> tuple:
    """One training in a worker process: (key, (NE, AUC), steps, seconds)."""
    key, member, arch, recipe, techniques, seed, threads = job
    import torch

    torch.set_num_threads(threads)
    from modelfleet.trainer.train import train

    with tempfile.TemporaryDirectory() as tmp:
        spec = member.spec(arch, f"{tmp}/out", techniques=techniques, recipe={**recipe, "seed": seed})
        t0 = time.perf_counter()
        m = train(spec, progress=False)
    return key, (m["ne"], m["auc"]), m["steps"], time.perf_counter() - t0


def bootstrap(x: np.ndarray, rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of x by resampling its elements."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(rounds, len(x)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    from modelfleet.trainer.techniques.catalogue import CATALOGUE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--techniques", nargs="*", default=[t for t in CATALOGUE if t not in SKIP])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PARAMS",
                    help="an extra row: technique (or technique-label) with JSON params")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--fleets", nargs="+", default=["adult", "movielens"], choices=["adult", "movielens"])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (1 torch thread each)")
    ap.add_argument("--architecture", type=json.loads, default={},
                    help="JSON merged over the base architecture (one level deep), e.g. '{\"wide\": true}'")
    ap.add_argument("--recipe", type=json.loads, default={}, help="JSON merged over the base recipe, e.g. '{\"epochs\": 10}'")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = ap.parse_args()

    rows: dict[str, list[dict]] = {name: [{"name": name}] for name in args.techniques}
    for v in args.variant:
        label, params = v.split("=", 1)
        rows[label] = [{"name": label.split(":")[0], "params": json.loads(params)}]
    members = [m for f in args.fleets for m in datasets.fleets()[f]]
    arch = {**BASE_ARCHITECTURE, **args.architecture}
    arch.update({k: {**v, **args.architecture[k]} for k, v in BASE_ARCHITECTURE.items()
                 if isinstance(v, dict) and isinstance(args.architecture.get(k), dict)})
    recipe = {**BASE_RECIPE, **args.recipe}
    jobs = [((m.name, seed, label), m, arch, recipe, techniques, seed, 1)
            for m in members for seed in args.seeds for label, techniques in [("base", []), *rows.items()]]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ne: dict[tuple, float] = {}
    auc: dict[tuple, float] = {}
    with mp.get_context("fork").Pool(args.jobs) as pool:
        for i, (key, (ne[key], auc[key]), _steps, _secs) in enumerate(pool.imap_unordered(_train, jobs), 1):
            if i % 25 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} trainings, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    minutes = (time.perf_counter() - t0) / 60

    fleet_of = {m.name: m.fleet for m in members}
    lines = [
        f"{len(members)} models ({', '.join(f'{f}: {sum(m.fleet == f for m in members)}' for f in args.fleets)}) x "
        f"{len(args.seeds)} seeds (seeds {', '.join(map(str, args.seeds))}); {len(jobs)} trainings in {minutes:.1f} min "
        f"with {args.jobs} worker processes; load average (1, 5, 15 min) before "
        f"{tuple(round(x, 2) for x in load_before)}, after {tuple(round(x, 2) for x in os.getloadavg())}; "
        f"{os.cpu_count()} CPUs; base architecture {json.dumps(arch)}, recipe {json.dumps(recipe)}",
        "",
        "| technique (default params unless given) | mean rel. NE change | 95 % CI (paired bootstrap) | "
        + " | ".join(f"{f} mean" for f in args.fleets) + " | pairs improved | mean AUC change |",
        "|---|---:|---:|" + "---:|" * len(args.fleets) + "---:|---:|",
    ]
    base_ne = [ne[m.name, s, "base"] for m in members for s in args.seeds]
    for label, techniques in rows.items():
        rel = np.array([(ne[m.name, s, label] - ne[m.name, s, "base"]) / ne[m.name, s, "base"]
                        for m in members for s in args.seeds])
        lo, hi = bootstrap(rel)
        per_fleet = [np.mean([(ne[m.name, s, label] - ne[m.name, s, "base"]) / ne[m.name, s, "base"]
                              for m in members for s in args.seeds if fleet_of[m.name] == f]) for f in args.fleets]
        params = techniques[0].get("params")
        shown = f"`{techniques[0]['name']}`" + (f" `{json.dumps(params)}`" if params else "")
        d_auc = np.mean([auc[m.name, s, label] - auc[m.name, s, "base"] for m in members for s in args.seeds])
        lines.append(f"| {shown} | {rel.mean():+.2%} | [{lo:+.2%}, {hi:+.2%}] | "
                     + " | ".join(f"{x:+.2%}" for x in per_fleet) + f" | {int((rel < 0).sum())}/{len(rel)} | {d_auc:+.4f} |")
    lines += ["", f"base NE (no technique): mean {statistics.mean(base_ne):.4f} over {len(base_ne)} models x seeds"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

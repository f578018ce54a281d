"""How often would a null edit be promoted? The old point gate against the paired gate, on real data.

    .venv/bin/python -P benchmarks/gate_noise.py                  # 4 Adult slices x 6 null edits
    .venv/bin/python -P benchmarks/gate_noise.py --null-edits 10 --out benchmarks/results/gate_noise.md
    .venv/bin/python -P benchmarks/gate_noise.py --steps 40         # short runs, on a busy machine

The fleet is the quickstart's: the template `examples/quickstart/template.yaml` and its four
instances (the UCI Adult data sliced by `relationship`). Each instance is trained once at the
template's seed (its baseline, as if promoted), then K more times with only `recipe.seed` changed
(a null edit: nothing about the model changes, so a gate should not call any of them better), in
this process, through the trainer's own `train()`. Each null edit names the baseline, so the
trainer scores both on the same eval examples and writes the paired comparison, as in a rollout.

Two gates judge every null edit at tolerance 0.002 (the quickstart's):
- old: promoted when NE(new) <= NE(baseline) * (1 + tolerance) (the point rule);
- paired: promoted when the upper bound of the paired 95 % interval of the relative NE change is
  <= tolerance (the rule when a paired comparison exists).
The table gives, per instance, the eval examples and positives, the mean |relative NE change| of
the null edits, the median interval half-width, how many null-edit models differ from the baseline
beyond the eval set's noise (interval excluding 0: the seed made a truly better or worse model,
which no eval-set interval can call noise), and how many null edits each gate promotes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
INSTANCES = ("wife", "unmarried", "not-in-family", "husband")


def specs(out: Path, names: list[str]):
    from modelfleet.api.resolve import resolve_training_spec
    from modelfleet.api.resources import ModelInstance, ModelTemplate

    template = ModelTemplate.model_validate(yaml.safe_load((QUICKSTART / "template.yaml").read_text()))
    for name in names:
        doc = yaml.safe_load((QUICKSTART / f"instance-{name}.yaml").read_text())
        doc["spec"]["data"]["trainUri"] = str(QUICKSTART / doc["spec"]["data"]["trainUri"])
        inst = ModelInstance.model_validate(doc)
        yield template, resolve_training_spec(template, inst, output_uri=str(out / name / "baseline"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--null-edits", type=int, default=6, help="seed-only retrains per instance (K)")
    ap.add_argument("--tolerance", type=float, default=None, help="gate tolerance (default: the template's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="training steps of every run (default: the quickstart's recipe)")
    ap.add_argument("--instances", nargs="+", choices=INSTANCES, default=list(INSTANCES))
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()

    import torch

    from modelfleet.trainer.train import train

    torch.set_num_threads(args.threads)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mf-gate-noise-") as tmp:
        for template, base in specs(Path(tmp), args.instances):
            if args.steps:
                base = base.model_copy(update={"recipe": base.recipe.model_copy(update={"steps": args.steps})})
            tol = template.spec.rollout.gate.tolerance if args.tolerance is None else args.tolerance
            m0 = train(base, progress=False)
            edits = []
            for k in range(1, args.null_edits + 1):
                spec = base.model_copy(
                    update={
                        "recipe": base.recipe.model_copy(update={"seed": base.recipe.seed + k}),
                        "output_uri": base.output_uri.replace("/baseline", f"/null-{k}"),
                        "baseline_uri": base.output_uri,
                    }
                )
                m = train(spec, progress=False)
                c = m["comparison"]
                assert c["paired"], c  # the same eval examples: the split does not depend on the seed
                edits.append(
                    {
                        "old": m["ne"] <= m0["ne"] * (1 + tol),
                        "paired": c["relativeNeHigh"] <= tol,
                        "change": c["relativeNeChange"],
                        "half": c["halfWidth"],
                        "apart": c["relativeNeLow"] > 0 or c["relativeNeHigh"] < 0,
                    }
                )
                print(
                    f"{base.instance} seed {spec.recipe.seed}: NE {m['ne']:.4f} vs {m0['ne']:.4f} "
                    f"({c['relativeNeChange']:+.2%}, interval [{c['relativeNeLow']:+.2%}, {c['relativeNeHigh']:+.2%}])",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append((base.instance, m0, edits, tol))
    wall = time.perf_counter() - t0

    lines = [
        "| instance | eval examples | positives | baseline NE | mean abs. NE change of null edits | median half-width (95 %) | intervals excluding 0 | old gate promotes | paired gate promotes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = old = new = 0
    for name, m0, edits, tol in rows:
        n_old = sum(e["old"] for e in edits)
        n_new = sum(e["paired"] for e in edits)
        total, old, new = total + len(edits), old + n_old, new + n_new
        lines.append(
            f"| {name} | {m0['examples']:,} | {m0['positives']:,} | {m0['ne']:.4f} | "
            f"{statistics.mean(abs(e['change']) for e in edits):.2%} | {statistics.median(e['half'] for e in edits):.2%} | "
            f"{sum(e['apart'] for e in edits)}/{len(edits)} | "
            f"{n_old}/{len(edits)} | {n_new}/{len(edits)} |"
        )
    lines.append(f"| **all** | | | | | | | **{old}/{total} ({old / total:.0%})** | **{new}/{total} ({new / total:.0%})** |")
    report = "\n".join(
        [
            f"Run {started:%Y-%m-%d %H:%M} UTC, {wall / 60:.1f} min wall, {args.threads} torch threads, "
            f"{args.null_edits} null edits per instance, tolerance {rows[0][3]:g}, confidence 0.95, "
            + (f"{args.steps} steps per run." if args.steps else "the quickstart's recipe (epochs) per run."),
            f"Load before the run: `{load}`; machine: {os.cpu_count()} CPUs.",
            "",
            *lines,
        ]
    )
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

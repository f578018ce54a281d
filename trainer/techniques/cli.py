"""`modelfleet techniques`: the catalogue with slots, params schemas and cost deltas. Torch-free.

Exit status: 0, or 2 when `--spec` cannot be read or is not a TrainingSpec (file and field named).
"""

from __future__ import annotations

import argparse
import json

from modelfleet.trainer.spec import ArchitectureSpec, DataSpec, TrainingSpec


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--spec", metavar="PATH",
        help="a TrainingSpec (JSON/YAML): cost deltas against its model instead of the default model",
    )


def _base_spec(path: str | None) -> TrainingSpec:
    if path:
        import fsspec
        import yaml
        from pydantic import ValidationError

        from modelfleet.errors import CliError, validation_message

        try:
            with fsspec.open(path, "rb") as fh:
                raw = yaml.safe_load(fh)  # bytes: YAML detects UTF-8/UTF-16 and names a bad byte
        except FileNotFoundError as exc:
            raise CliError(f"--spec {path}: no such file") from exc
        except (OSError, ValueError) as exc:
            raise CliError(f"--spec {path}: cannot be read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise CliError(f"--spec {path}: not valid YAML or JSON: {exc}") from exc
        if isinstance(raw, dict) and raw.get("kind") == "TrainingRun":
            raw = (raw.get("spec") or {}).get("training")
        try:
            return TrainingSpec.model_validate(raw)
        except ValidationError as exc:
            raise CliError(f"--spec {path}: not a TrainingSpec: {validation_message(exc)}") from exc
    # the default architecture on Criteo-shaped data (13 dense, 26 sparse features)
    return TrainingSpec(
        instance="example", revision="-", event="label", architecture=ArchitectureSpec(),
        data=DataSpec(format="criteo", train_uri="-"), output_uri="-",
    )


def rows(path: str | None = None) -> list[dict]:
    from modelfleet.errors import CliError
    from modelfleet.trainer.techniques.catalogue import CATALOGUE, TechniqueError, plan_cost, resolve_plan

    spec = _base_spec(path)
    try:
        base = resolve_plan(spec.model_copy(update={"techniques": []}))
    except TechniqueError as exc:
        raise CliError(f"--spec {path}: {exc}") from exc
    base_cost = plan_cost(base)
    out = []
    for name, t in sorted(CATALOGUE.items()):
        delta = t.cost_delta(base)
        out.append(
            {
                "name": name,
                "slot": t.slot,
                "description": t.description,
                "params": t.params_model.model_json_schema(by_alias=True).get("properties", {}),
                "baseParams": base_cost.params,
                "baseFlopsPerExample": base_cost.flops_per_example,
                "paramsDelta": delta.params,
                "flopsPerExampleDelta": delta.flops_per_example,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows(args.spec)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"cost deltas (default params) against a model of {table[0]['baseParams']:,} params, "
          f"{table[0]['baseFlopsPerExample']:,} FLOPs/example")
    print(f"{'NAME':24} {'SLOT':12} {'PARAMS Δ':>12} {'FLOPS/EX Δ':>12}  PARAMS")
    for r in table:
        params = ", ".join(
            f"{k}={v.get('default', '{}' if v.get('type') == 'object' else 'required')}"
            for k, v in r["params"].items()
        )
        print(f"{r['name']:24} {r['slot']:12} {r['paramsDelta']:>+12,} {r['flopsPerExampleDelta']:>+12,}  {params}")
        print(f"{'':24} {r['description']}")
    return 0

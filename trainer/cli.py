"""`modelfleet train --spec SPEC.json|yaml` / `--spec-json JSON`: train one resolved spec.

This is what a TorchX job runs. The last stdout line of a successful run is metrics.json as one
JSON object. Bad specs exit 2, failed runs (bad data, divergence) exit 1, each with one clear
message on stderr. torch is imported only inside run().
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="PATH_OR_URI", help="TrainingSpec as JSON or YAML (any fsspec URI)")
    src.add_argument("--spec-json", metavar="JSON", help="TrainingSpec as a JSON string (wire/camelCase form)")
    parser.add_argument("--output-uri", help="override spec.outputUri")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar (default: only on a terminal)",
    )


def load_spec(args: argparse.Namespace):
    import fsspec
    import yaml
    from pydantic import ValidationError

    from modelfleet.trainer.spec import TrainingSpec

    if args.spec_json is not None:
        raw: Any = json.loads(args.spec_json)
    else:
        with fsspec.open(args.spec, "r") as fh:
            raw = yaml.safe_load(fh)  # YAML is a superset of JSON
    if isinstance(raw, dict) and raw.get("kind") == "TrainingRun":
        raw = raw["spec"]["training"]
    if args.output_uri:
        raw = {**raw, "outputUri": args.output_uri}
    try:
        return TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SystemExit(_fail(f"invalid spec: {loc}: {err['msg']}", 2)) from None


def _fail(message: str, code: int) -> int:
    print(f"modelfleet train: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from modelfleet.trainer.techniques.catalogue import TechniqueError

    try:
        spec = load_spec(args)
    except SystemExit as exc:
        return int(exc.code)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read the spec: {exc}", 2)
    try:
        from modelfleet.trainer.techniques.catalogue import resolve_plan

        resolve_plan(spec)
    except TechniqueError as exc:
        return _fail(str(exc), 2)

    # torch loads here, only once the spec is known to be good
    from modelfleet.trainer.data import DataError
    from modelfleet.trainer.evaluate import MetricUndefined
    from modelfleet.trainer.report import ExitCode
    from modelfleet.trainer.train import TrainingError, train

    try:
        result = train(spec, progress=args.progress)
    except MetricUndefined as exc:
        return _fail(str(exc), ExitCode.INVALID_LABELS)
    except (DataError, TrainingError) as exc:
        return _fail(str(exc), 1)
    if result:
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0

"""`modelfleet train --spec SPEC.json|yaml` / `--spec-json JSON`: train one resolved spec.

This is what each TorchX worker runs (under `modelfleet.trainer.launch`). The last stdout line of
a successful run is metrics.json as one JSON object. A failure the trainer can classify exits
with its `ExitCode` (2 bad spec, 3 data not found, 4 data format, 5 labels, 6 diverged,
7 checkpoint of another run) after one line on stderr naming the field; a permanent one also
writes `<outputUri>/failure.json`. Anything unexpected exits 1 (transient: worth a retry) with
its traceback. torch is imported only inside run().
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from modelfleet.trainer.report import ExitCode, TrainerError, write_failure


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="PATH_OR_URI", help="TrainingSpec as JSON or YAML (any fsspec URI)")
    src.add_argument("--spec-json", metavar="JSON", help="TrainingSpec as a JSON string (wire/camelCase form)")
    parser.add_argument("--output-uri", help="override spec.outputUri")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar (default: only on a terminal)",
    )


def _invalid(field: str, message: str) -> TrainerError:
    return TrainerError(ExitCode.INVALID_SPEC, field, f"{field}: {message}")


def read_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The spec as a dict (the TrainingRun's `spec.training` when given a whole TrainingRun)."""
    import fsspec
    import yaml

    where = "--spec-json" if args.spec_json is not None else "--spec"
    try:
        if args.spec_json is not None:
            raw: Any = json.loads(args.spec_json)
        else:
            with fsspec.open(args.spec, "r", encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)  # YAML is a superset of JSON
    except FileNotFoundError:
        raise _invalid(where, f"{args.spec!r}: no such file") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _invalid(where, f"cannot read the spec: {detail}") from None
    if isinstance(raw, dict) and raw.get("kind") == "TrainingRun":
        raw = (raw.get("spec") or {}).get("training")
    if not isinstance(raw, dict):
        raise _invalid(where, f"a TrainingSpec is a mapping, got {type(raw).__name__}")
    if args.output_uri:
        raw = {**raw, "outputUri": args.output_uri}
    return raw


def load_spec(args: argparse.Namespace):
    """The validated TrainingSpec; TrainerError(INVALID_SPEC) naming the field otherwise."""
    from pydantic import ValidationError

    from modelfleet.trainer.spec import TrainingSpec

    raw = read_raw(args)
    try:
        return TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "spec." + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        raise _invalid(loc.rstrip("."), err["msg"]) from None


def check_spec(spec) -> None:
    """What the trainer checks before torch loads: the techniques against the catalogue."""
    from modelfleet.trainer.techniques.catalogue import TechniqueError, resolve_plan

    try:
        resolve_plan(spec)
    except TechniqueError as exc:
        raise _invalid(f"spec.{exc.field}", str(exc).split(": ", 1)[-1]) from None


def fail(error: TrainerError, output_uri: str | None) -> int:
    """Report a classified failure: one line on stderr, failure.json when it is permanent."""
    print(f"modelfleet train: error: {error.message}", file=sys.stderr, flush=True)
    if error.permanent and output_uri:
        try:
            write_failure(output_uri, error)
        except Exception as exc:  # noqa: BLE001 - the exit code still tells the scheduler
            print(f"modelfleet train: could not write failure.json under {output_uri}: {exc}", file=sys.stderr)
    return int(error.code)


def run(args: argparse.Namespace) -> int:
    output_uri = None
    try:
        spec = load_spec(args)
        output_uri = spec.output_uri
        check_spec(spec)
        # torch loads here, only once the spec is known to be good
        from modelfleet.trainer.train import train

        result = train(spec, progress=args.progress)
    except TrainerError as exc:
        return fail(exc, output_uri or raw_output_uri(args))
    if result:
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def raw_output_uri(args: argparse.Namespace) -> str | None:
    """Where failure.json goes when the spec did not validate: its outputUri, if it has one."""
    try:
        uri = read_raw(args).get("outputUri")
    except TrainerError:
        return None
    return uri if isinstance(uri, str) and uri else None

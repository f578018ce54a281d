"""The `modelfleet` command.

Each subcommand lives in the module that owns it, as two functions: `configure(parser)` adds its
arguments and `run(args) -> int` does the work (`module:NAME` means `configure_NAME`/`run_NAME`,
for a module that holds several commands). Modules keep heavy imports (torch, kopf) inside
`run`, so `modelfleet --help` and `modelfleet crds` stay fast and torch-free.

Expected failures are one line on stderr and a documented exit status (docs/cli.md): a module
raises `modelfleet.errors.CliError(message, code)` (`--debug` adds the traceback). Anything else
is a bug or trouble outside modelfleet: its traceback (what there is to go on, also in a job's
logs), then one line, exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback as _traceback

from modelfleet.errors import CliError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("modelfleet.api.cli", "write the CRDs generated from the API models"),
    "techniques": ("modelfleet.trainer.techniques.cli", "list the technique catalogue"),
    "train": ("modelfleet.trainer.cli", "train one resolved spec (what a TorchX job runs)"),
    "operator": ("modelfleet.operator.main", "run the operator (kopf) against a cluster"),
    "plan": ("modelfleet.operator.plan_cmd", "dry run: what a change would retrain and why"),
    "local": ("modelfleet.operator.local", "reconcile a folder of manifests on this machine"),
    "status": ("modelfleet.operator.fleet_cmd:status", "the fleet at a glance: revision, NE, model, state"),
    "logs": ("modelfleet.operator.fleet_cmd:logs", "the training logs of a run (or an instance's run)"),
    "report": ("modelfleet.operator.fleet_cmd:report", "a picture of NE per instance and technique adoption"),
    "predict": ("modelfleet.trainer.predict_cmd", "score rows of a CSV/Parquet file with a trained model"),
}


def build_parser() -> argparse.ArgumentParser:
    from modelfleet import __version__

    parser = argparse.ArgumentParser(
        prog="modelfleet",
        description="One template, many ranking models: train, gate and promote them.",
    )
    parser.add_argument("--version", action="version", version=f"modelfleet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # also after the command (`modelfleet plan --debug ...`); SUPPRESS keeps the global value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        path, _, suffix = module.partition(":")
        try:
            getattr(importlib.import_module(path), f"configure_{suffix}" if suffix else "configure")(p)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"modelfleet {args.command}: not available in this build", file=sys.stderr)
        return 2
    path, _, suffix = args._module.partition(":")
    try:
        return int(getattr(importlib.import_module(path), f"run_{suffix}" if suffix else "run")(args) or 0)
    except CliError as exc:
        return fail(args, exc.message, exc.code)
    except KeyboardInterrupt:
        return fail(args, "interrupted", 130)
    except Exception as exc:  # a bug or trouble outside modelfleet: the traceback is what there is
        return fail(args, f"unexpected error: {type(exc).__name__}: {exc}", 1, traceback=True)


def fail(args: argparse.Namespace, message: str, code: int, *, traceback: bool = False) -> int:
    """Print `modelfleet COMMAND: message` (after the traceback, under --debug or when asked) and
    return `code`."""
    if (traceback or getattr(args, "debug", False)) and sys.exc_info()[0] is not None:
        _traceback.print_exc()
    print(f"modelfleet {args.command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

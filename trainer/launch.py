"""`python -m modelfleet.trainer.launch [torchrun options] -m modelfleet train --spec-json ...`:
torchrun, exiting with the failed worker's exit code.

torchrun (torch.distributed.run's elastic agent) exits 1 whatever its workers exit with (tried:
a worker exiting 4 or 7 gives 1, with a ChildFailedError traceback), so a scheduler could not
tell bad input from a transient failure. This entry point takes torchrun's own arguments and
runs its launch in-process, then:

- before starting any worker, checks what a worker would check first and cheaply: the spec
  (INVALID_SPEC) and its data (`preflight.check_spec_data`: DATA_NOT_FOUND, DATA_FORMAT,
  INVALID_LABELS), exiting with that code and writing failure.json, as a worker would;
- when workers fail, exits with the code of the first worker that failed with a permanent code
  (`report.PERMANENT_EXIT_CODES`), else of the first that failed (128 + N for a worker killed by
  signal N), so the container's exit status is the worker's classified code.

The TorchX component (`component.py`) runs this instead of `torchrun`.
"""

from __future__ import annotations

import argparse
import sys

from modelfleet.trainer.report import PERMANENT_EXIT_CODES, ExitCode, TrainerError


def worker_exit_code(failures: dict[int, object]) -> int:
    """The container's exit status for a set of failed workers (rank -> ProcessFailure)."""
    ordered = sorted(failures.items(), key=lambda kv: (getattr(kv[1], "timestamp", 0), kv[0]))
    codes = [int(getattr(f, "exitcode", 1)) for _, f in ordered]
    permanent = [c for c in codes if c in PERMANENT_EXIT_CODES]
    code = permanent[0] if permanent else (codes[0] if codes else int(ExitCode.TRANSIENT))
    if code < 0:  # killed by signal N: what a shell reports for it (137 for SIGKILL, e.g. OOM)
        return 128 - code
    return code or int(ExitCode.TRANSIENT)


def preflight(worker_args: list[str], module: bool, script: str) -> int:
    """Check a `modelfleet train` worker's spec and data; the exit code (0: go on)."""
    if not (module and script == "modelfleet" and worker_args[:1] == ["train"]):
        return 0
    from modelfleet.trainer import cli
    from modelfleet.trainer.preflight import check_spec_data

    parser = argparse.ArgumentParser(prog="modelfleet train")
    cli.configure(parser)
    args, _ = parser.parse_known_args(worker_args[1:])
    output_uri = None
    try:
        spec = cli.load_spec(args)
        output_uri = spec.output_uri
        cli.check_spec(spec)
        check_spec_data(spec).raise_first()
    except TrainerError as exc:
        return cli.fail(exc, output_uri or cli.raw_output_uri(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, get_error_handler
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    code = preflight(list(args.training_script_args), bool(args.module), args.training_script)
    if code:
        return code
    handler = get_error_handler()
    handler.initialize()
    try:
        run(args)
    except ChildFailedError as exc:
        # as torchrun's @record does: hand the root cause's error file to whoever watches ours
        _, root = exc.get_first_failure()
        if root.error_file and root.error_file != "<N/A>":
            handler.dump_error_file(root.error_file, root.exitcode)
        code = worker_exit_code(exc.failures)
        print(f"modelfleet launch: worker failed; exit code {code}", file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

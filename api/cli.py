"""`modelfleet crds`: write the generated CRDs (crds/ and the chart's copy)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", action="append", default=None, metavar="DIR",
                        help="output folder; repeat for several (default: crds)")


def run(args: argparse.Namespace) -> int:
    from modelfleet.api.crd import write_crds

    for out in args.out or ["crds"]:
        for path in write_crds(out):
            print(path)
    return 0

"""`modelfleet operator`: run the kopf operator against a cluster.

Configuration comes from the environment (`OperatorConfig.from_env`, set by the Helm chart) and a
few flags. Peering is on unless `--standalone`: replicas of the operator that share a peering name
elect one active instance (kopf's KopfPeering/ClusterKopfPeering objects must exist, the chart
creates them), so two replicas never both act on the same objects.

kopf pauses *every* operator that sees a live peer of its own priority, so replicas must not share
one: without `--priority` each process draws a random one, the highest acts and the others wait;
when it stops (its peering record is withdrawn or expires) the next highest resumes.
"""

from __future__ import annotations

import argparse
import os
import sys

# Our names for kopf's formats: `plain` is kopf's FULL text line (kopf's own PLAIN drops the time
# and level), `json` its JSON object per line, with the Kubernetes object under "object".
LOG_FORMATS = ("plain", "json")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace (repeatable); default: MODELFLEET_NAMESPACES, else cluster-wide",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument("--peering", metavar="NAME", default="modelfleet", help="peering object name")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        metavar="N",
        help="peering priority (the highest live one acts); default: random per process, so replicas never tie",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: act even if other replicas run (one replica only)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="plain",
        help="plain: one text line per record (default); json: one JSON object per line, kopf's JSON format",
    )


def configure_logging(log_format: str, verbose: bool) -> None:
    """The operator's logging, through kopf's own configuration (what `kopf run --log-format` does)."""
    import kopf

    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
        # JSON carries the object as a field; text lines get kopf's "[namespace/name]" prefix.
        log_prefix=log_format != "json",
    )


def peering_priority(given: int | None) -> int:
    """`given`, else a random priority: two replicas at one priority would both pause for good."""
    import secrets

    return given if given is not None else 1 + secrets.randbelow(2**31 - 2)


def run(args: argparse.Namespace) -> int:
    from modelfleet.operator.config import ConfigError, OperatorConfig

    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"modelfleet operator: {exc}", file=sys.stderr)
        return 2
    namespaces = tuple(args.namespace or ()) or config.namespaces
    if namespaces != config.namespaces:
        import dataclasses

        config = dataclasses.replace(config, namespaces=namespaces)

    import kopf

    from modelfleet.operator import handlers, metrics

    configure_logging(args.log_format, args.verbose)
    try:
        metrics.serve(config.metrics_port)
    except OSError as exc:
        print(f"modelfleet operator: MODELFLEET_METRICS_PORT={config.metrics_port}: {exc}", file=sys.stderr)
        return 2

    registry = handlers.register(kopf.OperatorRegistry())
    ctx = handlers.OperatorContext(
        config=config,
        debounce_seconds=float(os.environ.get("MODELFLEET_DEBOUNCE_SECONDS", "0.5")),
        resync_seconds=float(os.environ.get("MODELFLEET_RESYNC_SECONDS", "30")),
    )
    kopf.run(
        registry=registry,
        standalone=args.standalone,
        priority=peering_priority(args.priority),
        peering_name=None if args.standalone else args.peering,
        liveness_endpoint=args.liveness,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        memo=kopf.Memo(ctx=ctx),
    )
    return 0

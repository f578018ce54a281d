"""Deterministic names and the labels that tie jobs, runs, instances and templates together.

Names are derived, never random, so a restarted operator finds what it already created instead of
creating it again.
"""

from __future__ import annotations

import hashlib

from modelfleet.api.resources import GROUP

LABEL_TEMPLATE = f"{GROUP}/template"
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_REVISION = f"{GROUP}/revision"
LABEL_RUN = f"{GROUP}/run"
LABEL_ATTEMPT = f"{GROUP}/attempt"
FINALIZER = f"{GROUP}/cancel-job"

_MAX_NAME = 63  # keep run names usable as label values and job name prefixes


def run_name(instance: str, revision: str) -> str:
    """`<instance>-<revision>`; a too-long instance name is shortened with a hash, stays unique."""
    name = f"{instance}-{revision}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(instance.encode()).hexdigest()[:6]
    keep = _MAX_NAME - len(revision) - len(digest) - 2
    return f"{instance[:keep].rstrip('-')}-{digest}-{revision}"


def label_value(value: str) -> str:
    """A string cut to a valid label value (63 chars, alphanumeric at both ends)."""
    return value[:63].strip("-_.")

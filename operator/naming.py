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
# A job is found by the uid and namespace of the run it belongs to, not by the run's name alone:
# jobs of runs in every namespace share the operator's jobs namespace, where names can repeat.
LABEL_RUN_UID = f"{GROUP}/run-uid"
LABEL_RUN_NAMESPACE = f"{GROUP}/run-namespace"
# The full template name on a run (label values stop at 63 characters; names at 253).
ANNOTATION_TEMPLATE = f"{GROUP}/template"
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
    """`value` as a valid label value: itself when it fits, else a prefix and a hash of the whole.

    Labels select; they are never read back as names (`template_name` reads the annotation), so
    two long names that share 63 characters must still get different values.
    """
    if len(value) <= 63:
        return value.strip("-_.")
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[:52].strip('-_.')}-{digest}"


def template_name(meta: dict) -> str | None:
    """The template a run belongs to, from its annotation (full name), else its label."""
    return (meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE) or (meta.get("labels") or {}).get(LABEL_TEMPLATE)

"""Errors a user can act on, and how the `modelfleet` command reports them.

- `CliError(message, code)`: an expected failure of a subcommand. `modelfleet` prints
  `modelfleet COMMAND: MESSAGE` on stderr and exits with `code`, without a traceback (`--debug`
  shows it). Exit codes are per command and documented in docs/cli.md.
- `validation_message(exc, prefix)`: one line for a pydantic ValidationError -- the field as the
  user wrote it (`spec.data.denseColumns[0]`), what is wrong, and a hint where YAML is the cause.
"""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """An expected failure: a one-line message and the exit status it maps to."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.message = message
        self.code = code


def field_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """`("spec", "techniques", 1, "name")` -> `spec.techniques[1].name` (the Problem field style)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _hint(err: dict[str, Any]) -> str:
    value = err.get("input")
    # YAML turns unquoted 1, 1.5, yes, no, true, off into numbers and booleans; a column named
    # "1" must be written '1'.
    if err.get("type") == "string_type" and isinstance(value, bool | int | float):
        kind = "a boolean" if isinstance(value, bool) else "a number"
        return f" (got {value!r}, {kind}: YAML reads unquoted numbers and yes/no/true/false/on/off that way; quote it)"
    return ""


def validation_message(exc: Any, prefix: str = "") -> str:
    """`field: message` for the first error of a pydantic ValidationError, and how many more."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    err = errors[0]
    where = field_path(err.get("loc", ()), prefix)
    text = f"{where}: {err.get('msg')}{_hint(err)}" if where else f"{err.get('msg')}{_hint(err)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error(s))"
    return text

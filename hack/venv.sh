#!/usr/bin/env bash
# Creates (or reuses) ./.venv with modelfleet installed editable plus its train, dev and report extras.
# Reinstalls only when pyproject.toml changed since the last install. Needs only python3.11 and pip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MODELFLEET_VENV:-$root/.venv}"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.modelfleet-stamp"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "modelfleet: preparing $venv (first run takes a few minutes)" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade "pip>=24" >&2
  "$venv/bin/python" -m pip install --quiet -e "$root[train,dev,report]" >&2
  echo "$want" > "$stamp"
fi

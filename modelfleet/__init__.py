"""modelfleet: one template, many ranking models, kept trained by a Kubernetes operator."""

from pathlib import Path

__version__ = "0.1.0"

# In a source checkout (an editable install) the subpackages live in the top-level folders api/,
# operator/ and trainer/. `operator/` carries no __init__.py, so it can never shadow the standard
# library's `operator`; it is reached here as the namespace subpackage `modelfleet.operator`.
# An installed wheel has them under modelfleet/ already and skips this.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "operator").is_dir():
    if str(_checkout) not in __path__:
        __path__.append(str(_checkout))

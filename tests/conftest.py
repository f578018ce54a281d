import sys
from pathlib import Path

# Shared test helpers (tests/schema_tools.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

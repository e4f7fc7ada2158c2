"""Unit-test helpers shared by several files: the runtime's in-memory store (runtime_memory.py) is importable
as a plain module (pytest runs with --import-mode=importlib, which puts no test folder on sys.path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

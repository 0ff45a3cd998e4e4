import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("ALMC_DEVICE", "cpu")  # tests compare numbers on the CPU provider


@pytest.fixture
def write(tmp_path):
    """write('a.alm', text) -> path, inside a fresh folder."""
    def _write(name, text):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p
    return _write

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def planted_data(tmp_path_factory):
    """Planted-signal Criteo-format data, synthesized and prepared once per session (tests/planted.py)."""
    from planted import make_planted

    return make_planted(tmp_path_factory.mktemp("planted"))

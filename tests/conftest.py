import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def planted_data(tmp_path_factory):
    """Planted-signal Criteo-format data, synthesized and prepared once per session (tests/planted.py)."""
    from planted import make_planted

    return make_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def planted_results(request, planted_data, tmp_path_factory):
    """{module name: {run name: results}} for the PLANTED_RUNS of every collected test module that uses this
    fixture, all trained in one 2-rank process group (tests/planted.py: train_suites)."""
    from planted import train_suites

    suites = {}
    for item in request.session.items:
        if "planted_results" in getattr(item, "fixturenames", ()):
            suites.setdefault(item.module.__name__, item.module.PLANTED_RUNS)
    return train_suites(planted_data, tmp_path_factory.mktemp("planted_runs"), suites)

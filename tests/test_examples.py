"""Every example runs (in a short setting), and the analysis reads what the simulation wrote."""
import os

import pytest

from conftest import ROOT, run_python

EXAMPLES = os.path.join(ROOT, "examples")


@pytest.mark.parametrize("model", ["ani1x", "amber14"])
def test_simulate_then_analyze(tmp_path, model):
    out = str(tmp_path / model)
    result = run_python([os.path.join(EXAMPLES, "simulate_alanine_dipeptide.py"), "--steps", "200",
                         "--output", out, "--model", model])
    assert result.returncode == 0, result.stderr
    result = run_python([os.path.join(EXAMPLES, "analyze_trajectory.py"), out])
    assert result.returncode == 0, result.stderr
    assert "frames: 100, atoms: 22" in result.stdout
    assert os.path.getsize(os.path.join(out, "ramachandran.png")) > 1000


def test_every_example_is_tested():
    tested = {"simulate_alanine_dipeptide.py", "analyze_trajectory.py"}
    assert {f for f in os.listdir(EXAMPLES) if f.endswith(".py")} == tested

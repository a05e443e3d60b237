"""The method registry: a method is one record behind an ``openmm_accel.methods`` entry point, and a new one,
installed by another package, appears in ``run``/``train``/``bench`` with its options grouped and scoped,
without any change to this package."""
import json
import os
import sys

from conftest import ROOT
from method_tests import MethodTests
from openmm_accel.method import jobs, methods

PLUGIN = '''
"""A third-party method: Langevin dynamics whose friction is scaled by --toy-scale."""
from dataclasses import dataclass

from openmm import unit

from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.method import BenchConfig, Job, Method
from openmm_accel.options import option, positive_in


@dataclass(frozen=True)
class ToyConfig:
    toy_scale: float = option(1.0, "--toy-scale", "friction factor", check=positive_in(unit.dimensionless))


@dataclass(frozen=True)
class ToyBenchConfig(BenchConfig):
    toy_rounds: int = option(2, "--toy-rounds")


class ToyBench(Job):
    help = "a toy benchmark"
    Config = ToyBenchConfig

    def run(self, config):
        return f"toy bench {config.toy_rounds}"


class Toy(Method):
    name = "toy"
    help = "scaled-friction Langevin"
    Config = ToyConfig
    bench = ToyBench()

    def integrator(self, run, start):
        integrator = LangevinABOBAIntegrator(run.temperature_k, run.friction_per_ps * run.options.toy_scale,
                                             run.timestep_fs * 1e-3)
        integrator.setRandomNumberSeed(run.seed)
        return integrator, start.state


METHOD = Toy()
'''


def installed_plugin(folder) -> dict:
    """Environment with a package ``toy_method`` installed in ``folder`` (module + dist-info entry point)."""
    (folder / "toy_method.py").write_text(PLUGIN)
    info = folder / "toy_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[openmm_accel.methods]\ntoy = toy_method:METHOD\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), ROOT, os.environ.get("PYTHONPATH", "")])}


def cli_with(environment, *args):
    import subprocess
    return subprocess.run([sys.executable, "-m", "openmm_accel.cli", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


def test_the_package_registers_its_methods():
    assert list(methods())[:1] == ["plain"] and {"lsd", "flashmd", "score", "drift"} <= set(methods())
    assert set(jobs("train")) == {"flashmd", "score", "drift"} and {"lsd", "flashmd"} <= set(jobs("bench"))


def test_a_method_from_another_package_runs_with_its_own_options(tmp_path):
    environment = installed_plugin(tmp_path)
    shown = cli_with(environment, "run", "--help")
    assert "--method toy: scaled-friction Langevin" in shown.stdout and "--toy-scale" in shown.stdout
    out = str(tmp_path / "run")
    done = cli_with(environment, "run", "--method", "toy", "--toy-scale", "3", "--system", "alanine-dipeptide-vacuum",
                    "--model", "mm", "--steps", "20", "--report-interval", "10", "--output", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["config"]["method"] == "toy" and summary["config"]["toy_scale"] == 3.0
    assert summary["steps_run"] == 20
    # its option is refused with another method, and other methods' options with it; its own values are checked
    for args, message in ((["--toy-scale", "2"], "toy_scale (--toy-scale): expected it only with --method toy"),
                          (["--method", "toy", "--window", "4"], "window (--window): expected it only with --method lsd"),
                          (["--method", "toy", "--toy-scale", "-1"],
                           "toy_scale (--toy-scale): expected a positive value")):
        refused = cli_with(environment, "run", "--model", "mm", "--output", str(tmp_path / "no"), *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert not os.path.exists(tmp_path / "no")
    bench = cli_with(environment, "bench", "toy", "--toy-rounds", "5")
    assert bench.returncode == 0 and "toy bench 5" in bench.stdout, bench.stderr
    refused = cli_with(environment, "bench", "lsd", "--toy-rounds", "5")
    assert refused.returncode == 2 and "--toy-rounds: expected it only with bench toy" in refused.stderr


class TestPlainMethod(MethodTests):
    method = "plain"
    run = dict(system="alanine-dipeptide-vacuum", model="mm", steps=20, report_interval=10)

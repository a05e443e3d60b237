"""The method registry: a method is one record behind an ``openmm_accel.methods`` entry point, and a new one,
installed by another package, appears in ``run``/``train``/``bench`` with its options grouped and scoped,
without any change to this package."""
import json
import os
import sys

from conftest import ROOT
from openmm_accel.method import commands, methods

PLUGIN = '''
"""A third-party method: Langevin dynamics whose friction is scaled by --toy-scale."""
from openmm import unit

from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.method import Command, Method, Option
from openmm_accel.validation import positive


def build(config, setup, state, platform, prepared, paths):
    integrator = LangevinABOBAIntegrator(config.temperature_k, config.friction_per_ps * config.toy_scale,
                                         config.timestep_fs * 1e-3)
    integrator.setRandomNumberSeed(config.seed)
    return integrator, state


def bench(args):
    return f"toy bench {args.toy_rounds}"


METHOD = Method(name="toy", help="scaled-friction Langevin", build=build,
                options=(Option("toy_scale", "--toy-scale", 1.0, "friction factor", type=float,
                                check=lambda value, name: positive(value, unit.dimensionless, name)),),
                bench=Command("a toy benchmark", (Option("toy_rounds", "--toy-rounds", 2, type=int),), bench))
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
    assert set(commands("train")) == {"flashmd", "score", "drift"} and {"lsd", "flashmd"} <= set(commands("bench"))


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
                          (["--method", "toy", "--toy-scale", "-1"], "toy_scale: expected a positive value")):
        refused = cli_with(environment, "run", "--model", "mm", "--output", str(tmp_path / "no"), *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert not os.path.exists(tmp_path / "no")
    bench = cli_with(environment, "bench", "toy", "--toy-rounds", "5")
    assert bench.returncode == 0 and "toy bench 5" in bench.stdout, bench.stderr
    refused = cli_with(environment, "bench", "lsd", "--toy-rounds", "5")
    assert refused.returncode == 2 and "--toy-rounds: expected it only with bench toy" in refused.stderr

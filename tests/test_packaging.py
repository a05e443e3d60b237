"""What a user installs is what the checkout holds: a wheel built from a copy of the source tree contains
every module and data file of ``openmm_accel/``, and the installed console script runs each method from
the installed files (not from this checkout, which the editable install used by the other tests exposes).
"""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

PACKAGE = "openmm_accel"
#: What a build legitimately leaves out of the source tree.
NOT_SHIPPED = ("__pycache__", ".pyc")


def source_files():
    """Paths (relative to the checkout, '/'-separated) of every file of the package in the source tree."""
    found = []
    for folder, subfolders, files in os.walk(os.path.join(ROOT, PACKAGE)):
        subfolders[:] = [name for name in subfolders if name not in NOT_SHIPPED]
        for name in files:
            if not name.endswith(NOT_SHIPPED):
                found.append(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/"))
    return sorted(found)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel (built from a clean copy of the tree, so no stale build/ folder can leak into it) and a
    folder it is installed into with its console script."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache"))
    wheels = work / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob(f"{PACKAGE}-*.whl")
    target = work / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    return wheel, target


def test_wheel_contains_every_module_and_data_file(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = [path for path in source_files() if path not in shipped]
    assert not missing, f"the wheel lacks {missing}"
    assert any(path.startswith(f"{PACKAGE}/speculative/") for path in shipped)


def isolated(target):
    """Command prefix and environment that see the installed package but not this checkout: ``python -S``
    skips the ``.pth`` files, among them the editable install's import hook, which would otherwise supply
    any module the installed copy lacks; the dependencies come from site-packages, after the install."""
    site_packages = [path for path in sys.path if path.endswith("site-packages")]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target)] + site_packages), PYTHONNOUSERSITE="1")
    return [sys.executable, "-S"], environment


def test_installed_package_is_imported_from_the_install(installed, tmp_path):
    _, target = installed
    python, environment = isolated(target)
    where = subprocess.run(python + ["-c", "import openmm_accel.integrators, openmm_accel.speculative.engine;"
                                     "print(openmm_accel.speculative.engine.__file__)"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(target)), where.stdout


@pytest.mark.parametrize("method, options", [
    ("lsd", ["--steps", "20", "--distill-steps", "200"]),
    ("flashmd", ["--steps", "5"]),
    ("score", ["--steps", "20", "--timestep", "2"]),  # its shipped model, from the wheel
    ("drift", ["--steps", "20"]),  # MD from a conformation of its shipped model, from the wheel
])
def test_installed_console_script_runs_each_method(installed, tmp_path, method, options):
    _, target = installed
    output = tmp_path / method
    python, environment = isolated(target)
    result = subprocess.run(python + [str(target / "bin" / "openmm-accel"), "run", "--method", method, "--output",
                                      str(output), "--no-progress", "--report-interval", "5"] + options,
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "summary.json").is_file() and (output / "trajectory.dcd").stat().st_size > 0

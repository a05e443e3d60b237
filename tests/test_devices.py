"""One device option: what it accepts, what it resolves to, and that OpenMM runs where it says."""
import json
import os

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from conftest import platform
from openmm_accel import InputError, devices, systems
from openmm_accel.forces import create_ml_system
from openmm_accel.models import create
from openmm_accel.simulate import RunConfig, run

GPU = torch.cuda.is_available()


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "", 3, None])
def test_a_bad_device_is_refused_by_name(value):
    with pytest.raises(InputError, match=r"device: expected cpu, cuda, cuda:N or auto"):
        devices.check_device(value)


@pytest.mark.skipif(GPU, reason="this machine has a GPU: the refusal of a missing one cannot be seen here")
def test_a_cuda_device_torch_cannot_see_is_refused_and_auto_means_the_cpu():
    with pytest.raises(InputError, match=r"device: expected a CUDA device torch can see \(it sees 0"):
        devices.check_device("cuda:0")
    assert devices.resolved("auto") == devices.resolved(None) == "cpu"
    assert devices.torch_device("auto") == torch.device("cpu")
    assert devices.platform("auto").getName() == devices.platform_name("cpu") == "CPU"
    assert devices.platform_name("cpu", float64=True) == "Reference"
    assert devices.platform_properties("cpu", threads=1) == {"DeterministicForces": "true", "Threads": "1"}


def test_a_torchforce_runs_on_the_cpu_platform_with_the_reference_platforms_forces():
    """The CPU platform runs a TorchForce through the Reference kernels it inherits: the same model gives the
    same energy and forces on both (float32 ANI-1x: to its own round-off)."""
    ala2 = systems.load("alanine-dipeptide-vacuum")
    system = create_ml_system(create("ani1x", ala2.topology), ala2.masses)
    results = []
    for name in ("Reference", "CPU"):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform(name))
        context.setPositions(ala2.positions)
        state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-9)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-3)


def test_runs_with_device_cpu_and_auto_are_the_same_run_on_the_cpu_platform(tmp_path):
    """--device cpu and the default (auto) on a machine without a GPU: the CPU platform, the same trajectory."""
    frames = []
    for device in ("cpu", "auto"):
        out = str(tmp_path / device)
        summary = run(RunConfig(model="ani1x", steps=20, report_interval=10, output=out, progress=False,
                                device=device, timestep_fs=0.5))
        assert summary["platform"] == ("CUDA" if GPU and device == "auto" else "CPU")
        assert summary["config"]["device"] == device
        frames.append(mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb")).xyz)
    if not GPU:
        np.testing.assert_array_equal(frames[0], frames[1])


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_run_on_a_missing_gpu_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="device"):
        run(RunConfig(model="mm", steps=10, output=str(out), progress=False, device="cuda"))
    assert not out.exists() or not os.listdir(out)


def test_doctor_reports_the_installation_and_its_checks_pass_here(tmp_path, capsys):
    from openmm_accel.cli import main
    path = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(path)]) == 0
    found = json.loads(path.read_text())
    versions = found["versions"]
    assert versions["openmm"] == openmm.__version__ and versions["torch"] == torch.__version__.split("+")[0]
    assert {"Reference", "CPU"} <= set(found["platforms"])
    assert found["torch"]["auto_device"] == devices.resolved("auto")
    where = {check["where"] for check in found["checks"]}
    assert {"OpenMM Reference", "OpenMM CPU", "torch cpu"} <= where
    assert all(check["passed"] for check in found["checks"]), found["checks"]
    assert "ok   ANI-1x TorchForce" in capsys.readouterr().out


def test_doctor_fails_a_platform_whose_forces_are_off(monkeypatch, capsys):
    """Planted: the CPU platform's forces 1 % off (a broken kernel would be further): its checks fail, exit 1."""
    from openmm_accel import doctor
    from openmm_accel.cli import main
    exact = doctor._platform_forces
    monkeypatch.setattr(doctor, "_platform_forces",
                        lambda system, positions, name: exact(system, positions, name) * (1.01 if name == "CPU" else 1))
    assert main(["doctor"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2 and all("OpenMM CPU" in line for line in failed)


@pytest.mark.parametrize("method", ["score", "drift"])
def test_samples_drawn_on_the_cpu_and_on_auto_are_the_same(tmp_path, method):
    """The model, its batches and its seeded random stream follow --device: on a machine without a GPU, cpu
    and auto draw the same configurations."""
    from openmm_accel.method import get_method
    job = get_method(method).sample
    drawn = []
    for device in ("cpu", "auto"):
        output = str(tmp_path / f"{device}.dcd")
        job(job.Config(count=4, output=output, device=device))
        drawn.append(mdtraj.load(output, top=output + ".pdb").xyz)
    if not GPU:
        np.testing.assert_array_equal(drawn[0], drawn[1])


def test_the_gpu_benchmark_runs_in_its_small_setting_on_the_cpu(tmp_path):
    """`bench gpu --small`: every section measured side by side on this device, reported as JSON and Markdown
    (figures are timings of seconds-long runs: only their presence and sign are checked)."""
    from openmm_accel.cli import main
    path = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--small", "--threads", "1", "--batches", "1", "4", "--cg-replicas", "1", "2",
                 "--json", str(path)]) == 0
    found = json.loads(path.read_text())
    assert found["device"] == devices.resolved("auto") and found["platform"] == devices.platform_name("auto")
    assert {row["batch"] for row in found["batched"] if row["model"] == "ani1x ensemble"} == {1, 4}
    assert [row["draft"] for row in found["lsd"]] == ["1 ANI network + EC, window 4"]
    assert 0 < found["lsd"][0]["acceptance"] <= 1 and found["lsd"][0]["speedup"] > 0
    assert found["flashmd"]["stride_fs"] == 8 and found["flashmd"]["speedup"] > 0
    assert [row["replicas"] for row in found["score"]] == [1, 2] and all(r["ns_per_day"] > 0 for r in found["score"])
    assert found["drift"]["per_second"] > 0 and "ani2x" in found["not_measured"]
    assert (tmp_path / "gpu.md").read_text().startswith("Device ")


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_auto_on_a_gpu_whose_openmm_lacks_cuda_runs_openmm_on_the_cpu_and_an_explicit_cuda_is_refused(monkeypatch):
    """A GPU machine with the plain install (no [cuda] extra): torch sees the GPU (simulated here), OpenMM has no
    CUDA platform. auto keeps torch on the GPU and OpenMM on its CPU platform; --device cuda asks for OpenMM's
    CUDA platform and is refused by name."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.resolved("auto") == "cuda:0"
    assert devices.platform_name("auto") == "CPU"
    assert devices.platform_properties("auto", threads=1) == {"DeterministicForces": "true", "Threads": "1"}
    assert devices.platform_name("cuda") == "CUDA"
    with pytest.raises(InputError, match="device: expected an OpenMM with the CUDA platform"):
        devices.platform("cuda")

"""What every registered method passes (metatrain's ``ArchitectureTests`` idea): a method's test module
subclasses :class:`MethodTests` in a few lines, naming the method and a tiny run of it, and gets these tests
in addition to its own statistical ones:

* its options are declared once, on its ``Config`` (flag, help), and appear in ``run --help``;
* a bad value of each checked option is refused, naming the option, before anything is written;
* another method's option is refused with it on the command line;
* a tiny run writes a trajectory mdtraj loads, and ``--resume`` continues it to the frame;
* its model file (if it has one) round-trips: load, save, load gives the same arrays and metadata;
* its ``sample`` job (if it has one) writes configurations mdtraj loads.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import mdtraj
import numpy as np
import pytest

from openmm_accel import InputError
from openmm_accel.cli import main
from openmm_accel.method import get_method, methods
from openmm_accel.options import options_of
from openmm_accel.simulate import RunConfig, run, validated
from openmm_accel.learning.model_file import PACKAGE_DATA
from openmm_accel.storage import log_rows, read_archive

MODEL_FORMAT = ("openmm_accel.model", 2)


def bad_value(option):
    """A value the option must refuse, or None if no generic one is known (free text)."""
    if option.choices is not None:
        return "no-such-choice"
    if option.check is not None and option.type in (int, float) and not option.nargs:
        return option.type(-1)
    return None


class MethodTests:
    """Subclass with ``method`` (its registered name) and ``run`` (RunConfig settings of a tiny run, a few
    report intervals long); ``options``: the method's Config for it; ``model``: a shipped model file of the
    method, as ``data/<method>/<file>`` of the package (for the round trip), and ``sample``: settings of its
    sample job's Config."""

    method: str = ""
    run: dict = {}
    options: Optional[object] = None
    model: Optional[str] = None
    sample: Optional[dict] = None

    def config(self, output, **changes) -> RunConfig:
        return RunConfig(method=self.method, output=str(output), progress=False,
                         **{**self.run, "options": self.options, **changes})

    def test_options_are_declared_once_and_shown(self, capsys):
        method = get_method(self.method)
        assert method.name == self.method and method.help
        declared = options_of(method.Config)
        for option in declared:
            assert option.flag.startswith("--") and option.help, option
        with pytest.raises(SystemExit):
            main(["run", "--help"])
        shown = capsys.readouterr().out
        assert all(option.flag in shown for option in declared)

    def test_bad_options_are_refused_by_name(self, tmp_path):
        options = self.options or get_method(self.method).Config()
        refused = 0
        for option in options_of(type(options)):
            value = bad_value(option)
            if value is None:
                continue
            bad = dataclasses.replace(options, **{option.name: value})
            with pytest.raises(InputError, match=rf"^{option.name}\b|^{option.flag[2:].replace('-', '_')}\b"):
                validated(self.config(tmp_path / "run", options=bad))
            refused += 1
        with pytest.raises(InputError, match="^steps"):
            run(self.config(tmp_path / "run", steps=0))
        assert not os.path.exists(tmp_path / "run")
        assert refused == sum(bad_value(option) is not None for option in options_of(type(options)))

    def test_another_methods_options_are_refused(self, tmp_path, capsys):
        others = [(name, option) for name, method in methods().items() if name != self.method
                  for option in options_of(method.Config)
                  if option.name not in {o.name for o in options_of(get_method(self.method).Config)}]
        name, option = others[0]
        value = [] if option.action else [str(option.default if option.default is not None else 1)]
        code = main(["run", "--method", self.method, "--output", str(tmp_path / "no"), option.flag, *value])
        assert code == 2 and f"it only with --method {name}" in capsys.readouterr().err
        assert not os.path.exists(tmp_path / "no")

    def test_a_tiny_run_resumes_and_loads_in_mdtraj(self, tmp_path):
        out = tmp_path / "run"
        steps, every = self.run["steps"], self.run["report_interval"]
        first = run(self.config(out))
        assert first["final_step"] == steps and first["config"]["method"] == self.method
        resumed = run(self.config(out, steps=2 * steps, resume=True))
        assert resumed["final_step"] == 2 * steps and resumed["steps_run"] == steps
        frames = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
        assert frames.n_frames == 2 * steps // every and np.all(np.isfinite(frames.xyz))
        for name in get_method(self.method).reported_files:  # a row per report, the resumed part appended
            assert log_rows(str(out / name)) == frames.n_frames, name

    def test_model_file_round_trip(self, tmp_path):
        method = get_method(self.method)
        if self.model is None:
            assert method.load_model(None) is None  # the method has no model file
            return
        shipped = os.path.join(PACKAGE_DATA, self.model)
        model = method.load_model(shipped)
        path = str(tmp_path / ("copy" + os.path.splitext(shipped)[1]))
        method.save_model(path, model)
        again = method.load_model(path)
        assert again.metadata == model.metadata
        (first, arrays), (second, copied) = (read_archive(p, *MODEL_FORMAT, "path", "model") for p in (shipped, path))
        assert first["config"] == second["config"] and first["metadata"] == second["metadata"]
        assert set(arrays) == set(copied) and all(np.array_equal(arrays[k], copied[k]) for k in arrays)

    def test_sample_job_writes_what_mdtraj_loads(self, tmp_path):
        job = get_method(self.method).sample
        if self.sample is None:
            assert job is None
            return
        output = str(tmp_path / "samples.dcd")
        line = job(job.Config(count=5, output=output, **self.sample))
        frames = mdtraj.load(output, top=output + ".pdb")  # a DCD gets its topology beside it
        assert frames.n_frames == 5 and np.all(np.isfinite(frames.xyz)) and "samples.dcd" in line

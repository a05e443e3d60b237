"""The Triton kernels of cuda_kernels against their torch references, run on the CPU by Triton's interpreter
(TRITON_INTERPRET=1, in a process of its own: Triton reads it when a kernel is defined).

Tolerances: the kernels compute in float32; a weighted average over at most a few hundred keys carries a
relative error of a few 1e-7 (measured: up to 9e-7 against float64), so 1e-5 of the largest value is far
from a real fault: the planted one (a kernel width 1 % off) misses by more than 1e-3.
"""
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

HERE = os.path.dirname(os.path.abspath(__file__))

CHECK = r"""
import json
import torch
from cuda_kernels.gaussian_average import gaussian_average
from openmm_accel.drift.field import Guidance, drifting_field

generator = torch.Generator().manual_seed(1)


def normal(*shape):
    return torch.randn(*shape, generator=generator)


def relative(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def reference(x, y, values, width, exclude_self=False):
    logits = -torch.cdist(x.double(), y.double()).square() / (2 * width**2)
    if exclude_self:
        logits = logits.masked_fill(torch.eye(len(x), dtype=torch.bool), float("-inf"))
    return torch.softmax(logits, -1) @ values.double()


errors = {}
for rows, keys, dims, columns, exclude_self in ((37, 37, 5, 5, True), (50, 70, 66, 132, False), (3, 129, 17, 1, False)):
    x = normal(rows, dims)
    y = x if exclude_self else normal(keys, dims)
    values = normal(len(y), columns)
    errors[f"{rows}x{keys}x{dims}->{columns}{' self' if exclude_self else ''}"] = relative(
        gaussian_average(x, y, values, 2.0, exclude_self), reference(x, y, values, 2.0, exclude_self))
x, y, values = normal(40, 8), normal(60, 8), normal(60, 8)
planted = relative(gaussian_average(x, y, values, 2.0 * 1.01), reference(x, y, values, 2.0))
fields = {}
x, data, scores, known = normal(48, 6), normal(80, 6), normal(80, 6), normal(80, 6)
negatives = normal(30, 6)
for name, guidance, others in (("none", Guidance(), None), ("fi", Guidance("fi", 0.5, scores), None),
                               ("fk", Guidance("fk", 0.7, scores), None),
                               ("fk, data scores", Guidance("fk", 0.7, scores, known), None),
                               ("negatives", Guidance("fi", 0.5, scores), negatives)):
    fused = drifting_field(x, data, (0.8, 1.6), guidance, negatives=others, fused=True)
    plain = drifting_field(x, data, (0.8, 1.6), guidance, negatives=others, fused=False)
    fields[name] = relative(fused, plain)
print(json.dumps({"kernel": errors, "planted": planted, "field": fields}))
"""


def test_the_fused_gaussian_average_and_the_drifting_field_on_it_equal_their_torch_references():
    """gaussian_average on sizes that are not multiples of its blocks, with and without the self pair, equals
    the float64 torch average; the drifting field computed on it (every guidance, own and given negatives)
    equals the torch path's; a kernel width 1 % off is caught."""
    import json
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(error < 1e-5 for error in measured["kernel"].values()), measured
    assert all(error < 1e-5 for error in measured["field"].values()), measured
    assert measured["planted"] > 100 * 1e-5, measured

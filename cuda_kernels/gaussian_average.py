"""Gaussian-kernel averages in one pass (Triton): ``out_i = sum_j softmax_j(-|x_i - y_j|^2 / 2 h^2) v_j``.

The drifting field's mean shifts (``openmm_accel.drift.field``) are such averages over every pair of a
batch of generated samples and the data: in torch the ``(B, M)`` weights are materialised, read and written
three times (distances, softmax, product). Here each program takes a block of rows of ``x``, streams the
``y`` and ``v`` blocks through an online softmax (running maximum, normaliser and weighted sum, as in
FlashAttention: Dao et al. 2022, arXiv:2205.14135) and writes only ``(B, E)``. Squared distances are
``|x|^2 + |y|^2 - 2 x.y`` in float32 with IEEE products (no TF32), as ``torch.cdist`` computes them for
batches. The number of key blocks is a compile-time constant: one compilation per number of keys (a
training run's batches have one), and a loop the interpreter runs with NumPy 2.4 (a runtime bound there
fails: triton-lang/triton#9171).

The reference is the torch path of ``openmm_accel.drift.field``; ``tests/test_cuda_kernels.py`` compares
the two under ``TRITON_INTERPRET=1`` on the CPU. The drift field calls this kernel only for CUDA tensors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

#: A masked logit: far below any real one, but finite, so that a block with no real key gives exp(...) = 0
#: instead of NaN.
MASKED = -1.0e30


@triton.jit
def _gaussian_average_kernel(x_ptr, y_ptr, v_ptr, out_ptr, n_rows, n_keys, n_dims, n_values, scale,
                             EXCLUDE_SELF: tl.constexpr, KEY_BLOCKS: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                             BLOCK_KEYS: tl.constexpr, BLOCK_DIMS: tl.constexpr, BLOCK_VALUES: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    dims = tl.arange(0, BLOCK_DIMS)
    columns = tl.arange(0, BLOCK_VALUES)
    row_ok = rows < n_rows
    x = tl.load(x_ptr + rows[:, None] * n_dims + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < n_dims),
                other=0.0)
    x_norm = tl.sum(x * x, axis=1)
    running_max = tl.full((BLOCK_ROWS,), MASKED, tl.float32)
    normaliser = tl.zeros((BLOCK_ROWS,), tl.float32)
    total = tl.zeros((BLOCK_ROWS, BLOCK_VALUES), tl.float32)
    for block in range(KEY_BLOCKS):
        keys = block * BLOCK_KEYS + tl.arange(0, BLOCK_KEYS)
        key_ok = keys < n_keys
        y = tl.load(y_ptr + keys[:, None] * n_dims + dims[None, :], mask=key_ok[:, None] & (dims[None, :] < n_dims),
                    other=0.0)
        v = tl.load(v_ptr + keys[:, None] * n_values + columns[None, :],
                    mask=key_ok[:, None] & (columns[None, :] < n_values), other=0.0)
        products = tl.dot(x, tl.trans(y), input_precision="ieee")
        squared = x_norm[:, None] + tl.sum(y * y, axis=1)[None, :] - 2.0 * products
        logits = -tl.maximum(squared, 0.0) * scale
        keep = row_ok[:, None] & key_ok[None, :]
        if EXCLUDE_SELF:
            keep = keep & (rows[:, None] != keys[None, :])
        logits = tl.where(keep, logits, MASKED)
        new_max = tl.maximum(running_max, tl.max(logits, axis=1))
        weights = tl.where(keep, tl.exp(logits - new_max[:, None]), 0.0)
        shrink = tl.exp(running_max - new_max)
        normaliser = normaliser * shrink + tl.sum(weights, axis=1)
        total = total * shrink[:, None] + tl.dot(weights, v, input_precision="ieee")
        running_max = new_max
    normaliser = tl.where(row_ok, normaliser, 1.0)  # rows past the end: nothing to divide
    tl.store(out_ptr + rows[:, None] * n_values + columns[None, :], total / normaliser[:, None],
             mask=row_ok[:, None] & (columns[None, :] < n_values))


def _block(size: int, smallest: int = 16) -> int:
    return max(smallest, triton.next_power_of_2(int(size)))


def gaussian_average(x: torch.Tensor, y: torch.Tensor, values: torch.Tensor, width: float,
                     exclude_self: bool = False, block_rows: int = 32, block_keys: int = 32) -> torch.Tensor:
    """``(B, E)``: the average of ``values`` ``(M, E)`` over ``y`` ``(M, D)`` with weights ``softmax_j(-|x_i -
    y_j|^2 / 2 width^2)`` for each row of ``x`` ``(B, D)``; with ``exclude_self`` (``y`` is ``x``) the pair
    i = j is left out. Computed in float32, returned in ``x``'s dtype."""
    if x.dim() != 2 or y.dim() != 2 or values.dim() != 2 or x.shape[1] != y.shape[1] or len(values) != len(y):
        raise ValueError(f"x (B, D), y (M, D), values (M, E): got {tuple(x.shape)}, {tuple(y.shape)}, "
                         f"{tuple(values.shape)}")
    if exclude_self and len(x) != len(y):
        raise ValueError("exclude_self: y must be x (same rows)")
    queries, keys, averaged = (t.detach().to(torch.float32).contiguous() for t in (x, y, values))
    out = torch.empty((len(x), values.shape[1]), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(len(x), block_rows),)
    _gaussian_average_kernel[grid](queries, keys, averaged, out, len(x), len(y), x.shape[1], values.shape[1],
                                   1.0 / (2.0 * float(width) ** 2), EXCLUDE_SELF=bool(exclude_self),
                                   KEY_BLOCKS=triton.cdiv(len(y), block_keys), BLOCK_ROWS=block_rows,
                                   BLOCK_KEYS=block_keys, BLOCK_DIMS=_block(x.shape[1]),
                                   BLOCK_VALUES=_block(values.shape[1]))
    return out.to(x.dtype)

"""GPU kernels of openmm_accel (Triton), each beside its torch reference in the package and used only on
CUDA tensors; tested on the CPU under ``TRITON_INTERPRET=1`` (tests/test_cuda_kernels.py)."""

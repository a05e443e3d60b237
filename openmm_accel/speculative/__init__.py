"""Langevin speculative dynamics (METHODS.md section 1): the exact coupling, the draft/verify engine, its
schedulers (batched on one device, or Ray workers), distilled drafts, ML/MM pairs and the theory of its
acceptance and speed-up. The OpenMM integrator is :class:`openmm_accel.integrators.SpeculativeLangevinIntegrator`.
"""

"""Fused kernels for the DiT-DH block (Triton, as ``torch.library`` custom
ops with a backward) and the PyTorch expressions they compute.

:mod:`decq_plugin.ops.reference` holds the definitions;
:mod:`decq_plugin.ops.fused` the ops (importing it defines them in
``torch.ops.decq_plugin``). Nothing is imported here, so ``import
decq_plugin.ops`` has no side effect.
"""

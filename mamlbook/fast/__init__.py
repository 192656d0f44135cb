"""Faster ways to compute the same numbers as the core, each a backend of ``maml_loss``.

- ``batched``: the forward pass of T tasks as a few batched tensor operations, for
  networks of known layers (the MLP, Conv4), in chunks of tasks on the CPU.
- ``closed_form``: MAML's meta-gradient for ReLU networks with the squared error,
  written out, without autograd's graph of the inner gradient.

``mamlbook.backends`` chooses among them and the core's own computation; each passes
the same oracle tests as the per-task loop of ``mamlbook.reference``.
"""

"""Hooks that put tritonprop's kernels into other libraries' models, one module per library.

Each is imported explicitly (``from tritonprop.integrations import transformers``) and only by
users who have that library: ``import tritonprop`` imports none of them.
"""

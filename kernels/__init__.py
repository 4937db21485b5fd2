"""Triton kernels and their launch functions: tensors in, tensors out. No autograd, no modules."""

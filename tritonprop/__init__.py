"""tritonprop: hand-written Triton kernels, with their backward passes, for the classic layers.

Importing tritonprop chooses the backend before any kernel is decorated: with no CUDA device
(and no TRITON_INTERPRET set by the user) kernels run under Triton's interpreter on the CPU.
"""
from tritonprop import backend as _backend

_backend.configure()

__version__ = "0.1.0"

from tritonprop import ops  # noqa: E402  (must follow configure())
from tritonprop.recording import record  # noqa: E402

__all__ = ["ops", "record", "__version__"]

r"""The fused engine: whole-sequence forward and hand-derived backpropagation through time.

For a cell whose ``fused_kernel()`` names a kernel, under the regularizers of
:mod:`rnnkit.regularizers` (or any wrapper that describes its masks), a run is

1. the input side of every step at once, by autograd: ``P = project_inputs(x)``, one GEMM
   over (T·B, input_size) with the recurrent bias folded in (:mod:`.projection`);
2. one ``torch.autograd.Function`` for the recurrence (:mod:`.engine`). Its forward loop does
   the fewest operations per step the cell's equation allows — one GEMM against the
   pre-transposed ``weight_hh``, activations in place on contiguous gate blocks, the state
   update as a ``lerp`` — writing into preallocated (T, B, ·) histories. Its backward is
   derived by hand (:mod:`.adjoint`: the equations; one file per kernel family:
   :mod:`.leaky`, :mod:`.gru`, :mod:`.lstm`);
3. the outputs (``cell.output`` of the states, zero past each sequence's end), by autograd.

**Where the loops run.** On CPU (float32/float64) the loops run on NumPy views of the very
same buffers (:mod:`._cpu`): at small batches a step is a few microseconds of arithmetic and
the cost is each operation's call overhead, a third of torch's in NumPy; at large batches
NumPy's vectorized ``tanh`` is several times faster than torch's on CPU. A step's GEMM runs
in NumPy's BLAS when small and otherwise, in float32, in oneDNN's matmul against a weight
laid out once per run (as torch.nn.LSTM's CPU kernel does; twice the speed of an sgemm on
CPUs with AVX-512), in float64 in torch's BLAS; both follow ``torch.set_num_threads``.
Buffers come from NumPy blocks reused between training steps. With numba installed the LSTM
kernels run their pointwise steps compiled (:mod:`.lstm_compiled`). On every other device or
dtype the loops run on torch operations: they are written once, against the few operations
of ``NumpyOps`` and ``TorchOps``. On CUDA, with Triton installed (``pip install "rnnkit[gpu]"``),
the forward and adjoint recursions run as Triton kernels instead, one launch per sequence
(:mod:`.gpu`; :func:`triton_status` says whether they can run). :func:`configured` selects any
of these paths (their twins).

**Under torch.compile** a run is one custom operator, ``rnnkit::fused_recurrence`` (:mod:`.ops`),
running the same kernels: a compiled model keeps its fused layers inside one graph. Which of these
paths a run takes, and what runs instead where none can (an exported program, a ``torch.func``
transform), :func:`rnnkit.engines.select.hand_over` decides.

Every result equals the ``loop`` engine's to rounding (tests/test_fused.py checks outputs,
final states and all gradients in float64). Double backward (``create_graph=True``) is
refused with an error; the ``loop`` engine does it.
"""
from ._cpu import SETTINGS, configured, onednn
from ..._buffers import POOL
from .engine import KERNELS, FusedEngine
from .gpu import triton_status

__all__ = ["FusedEngine", "KERNELS", "SETTINGS", "configured", "onednn", "release_memory", "triton_status"]


def release_memory() -> int:
    """Free the CPU buffers kept for reuse between training steps by the fused engine, the regularizers'
    masks and the HMMs' forward-backward passes (those no tensor uses any more); returns the bytes freed.
    The pool (:data:`rnnkit._buffers.POOL`) also drops free blocks beyond 2 GiB by itself (``max_bytes``)."""
    return POOL.release()

"""Kernel launches whose arguments are marshalled once.

numba-cuda's dispatcher types and marshals every argument on every call: tens of microseconds for a
convolution's dozen tuples and arrays, longer than a small layer's kernel runs.  A RecordedLaunch compiles
the kernel for one call's arguments, keeps the marshalled argument list, and on later calls replaces only
the data pointers of the arrays that change from call to call (the input and the output).  Everything
else (shapes, strides, sizes, weights) must stay as recorded: callers key their recordings on the input's
shape, layout and dtype.

This reaches into numba-cuda's launch internals (``_Kernel._prepare_args`` and cuda.core's ``launch``); where
they are missing (the simulator, another numba-cuda version) the recording falls back to the ordinary
dispatcher call, which is slower but equally correct.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

_ARRAY_DATA_SLOT = 4  # an array argument is marshalled as meminfo, parent, size, itemsize, data, shape..., strides...


class RecordedLaunch:
    """``kernel[blocks, threads](*args)`` with ``args[i]`` for i in ``variable`` replaceable by device pointers."""

    def __init__(self, dispatcher, blocks, threads, args: Sequence[Any], variable: Sequence[int]):
        self.dispatcher, self.blocks, self.threads = dispatcher, blocks, threads
        self.variable = tuple(variable)
        self.args = [None if i in self.variable else a for i, a in enumerate(args)]  # hold no input or output
        self.fast = None
        self.streams = {}
        try:
            from numba.cuda._compat import CUDA_CORE_GE_1_0
            from numba.cuda.cudadrv import driver
            from numba.cuda.dispatcher import LaunchConfig, launch
            kernel = dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))
            marshalled, slots = [], []
            for i, (argument_type, value) in enumerate(zip(kernel.argument_types, args)):
                start = len(marshalled)
                kernel._prepare_args(argument_type, value, 0, [], marshalled)
                if i in self.variable:
                    slots.append(start + _ARRAY_DATA_SLOT)
            grid = blocks if isinstance(blocks, tuple) else (blocks,)
            block = threads if isinstance(threads, tuple) else (threads,)
            cooperative = {"is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch": False}
            config = LaunchConfig(grid=grid, block=block, shmem_size=0, **cooperative)
            self.fast = (launch, config, kernel._codelibrary.get_cufunc().kernel, marshalled, slots,
                         driver._to_core_stream)
        except Exception:  # simulator or changed internals: the dispatcher path below still works
            self.fast = None

    def __call__(self, pointers: Callable[[], Sequence[int]], arrays: Callable[[], Sequence[Any]],
                 stream: Any = 0) -> None:
        """Launch with the variable arguments at ``pointers()`` (device addresses, in ``variable``'s order).

        ``arrays()`` gives device arrays for the same arguments; only one of the two is called: the
        addresses on the fast path, the arrays where it is off.
        ``stream``: 0 (the default stream) or a numba stream.
        """
        if self.fast is not None:
            launch, config, cukernel, marshalled, slots, to_core_stream = self.fast
            values = list(marshalled)
            for slot, pointer in zip(slots, pointers()):
                values[slot] = pointer
            core_stream = self.streams.get(stream)  # numba streams hash by identity; 0 is the default stream
            if core_stream is None:
                core_stream = self.streams[stream] = to_core_stream(stream)
            launch(core_stream, config, cukernel, *values)
            return
        args = list(self.args)
        for i, array in zip(self.variable, arrays()):
            args[i] = array
        self.dispatcher[self.blocks, self.threads, stream](*args)

"""Explicit 512-bit SIMD for Numba kernels: a vector type and load, store, broadcast and FMA intrinsics.

Why: LLVM keeps a kernel's accumulator tile in registers only when the accumulators are SSA values, and
Numba arrays (even tiny local ones) are memory that LLVM cannot prove unaliased, so an auto-vectorized
tile is loaded and stored around every FMA.  Named vector variables built with these intrinsics compile to
a textbook register-blocked micro-kernel.  A vector is one native register: 64 bytes (16 float32) where
the host has AVX-512, else 32 bytes (8 float32, AVX2); ``VECTOR_REGISTERS`` is how many the ISA has.

Every index is a flat element offset into a C-contiguous array; callers guarantee it is in bounds.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model



def _host_vector_shape() -> tuple[int, int]:
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
        if features.get("avx512f"):
            return 64, 32
        if features.get("avx") or features.get("avx2"):
            return 32, 16
    except Exception:  # a host llvmlite cannot describe: plain SSE widths
        pass
    return 16, 16


VECTOR_BYTES, VECTOR_REGISTERS = _host_vector_shape()


class SimdVector(types.Type):
    """A VECTOR_BYTES-wide LLVM vector of ``dtype``."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"SimdVector({dtype} x {self.lanes})")


@register_model(SimdVector)
class _SimdModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _element_pointer(context, builder, array_type, array, index, index_type):
    data = context.make_array(array_type)(context, builder, array).data
    offset = context.cast(builder, index, index_type, types.intp)
    return builder.gep(data, [offset])


def _broadcast(builder, vector_type, scalar):
    """A ``vector_type`` with every lane equal to ``scalar``."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), mask)


def _load(context, builder, sig, args, vector_type):
    """An unaligned load of ``vector_type`` at array.flat[index] (args: array, index)."""
    pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
    return builder.load(builder.bitcast(pointer, vector_type.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)


@intrinsic
def vload(typingctx, array, index):
    """The vector at array.flat[index : index + lanes] (unaligned)."""
    vector = SimdVector(array.dtype)

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig, args, context.get_value_type(sig.return_type))

    return vector(array, index), codegen


@intrinsic
def vload_even(typingctx, array, index):
    """Lanes 0, 2, 4, ... of array.flat[index : index + 2 * lanes]: a stride-2 load (two loads, one shuffle)."""
    vector = SimdVector(array.dtype)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        wide_type = ir.VectorType(vector_type.element, 2 * vector_type.count)
        wide = _load(context, builder, sig, args, wide_type)
        even = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), list(range(0, 2 * vector_type.count, 2)))
        return builder.shuffle_vector(wide, ir.Constant(wide_type, ir.Undefined), even)

    return vector(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """array.flat[index : index + lanes] = value (unaligned)."""
    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vector_type = context.get_value_type(sig.args[2])
        builder.store(args[2], builder.bitcast(pointer, vector_type.as_pointer()),
                      align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, index, value), codegen


@intrinsic
def vsplat(typingctx, array, index):
    """A vector with every lane equal to array.flat[index]."""
    vector = SimdVector(array.dtype)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return _broadcast(builder, context.get_value_type(sig.return_type), builder.load(pointer))

    return vector(array, index), codegen


@intrinsic
def vzeros(typingctx, array):
    """A zero vector of ``array``'s dtype."""
    vector = SimdVector(array.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(sig.return_type), None)

    return vector(array), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused, lane by lane (llvm.fma)."""
    if not isinstance(a, SimdVector) or a != b or a != c:
        return None

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type] * 3),
                                            f"llvm.fma.v{vector_type.count}f{vector_type.element.intrinsic_name[1:]}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b lane by lane."""
    if not isinstance(a, SimdVector) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


def _zip_codegen(high):
    def codegen(context, builder, sig, args):
        lanes = args[0].type.count
        start = lanes // 2 if high else 0
        order = [index for k in range(start, start + lanes // 2) for index in (k, lanes + k)]
        return builder.shuffle_vector(args[0], args[1], ir.Constant(ir.VectorType(ir.IntType(32), lanes), order))
    return codegen


@intrinsic
def vzip_low(typingctx, a, b):
    """a0, b0, a1, b1, ... from the low halves of a and b (the first lanes of their interleaving)."""
    if not isinstance(a, SimdVector) or a != b:
        return None
    return a(a, b), _zip_codegen(False)


@intrinsic
def vzip_high(typingctx, a, b):
    """The high halves of a and b interleaved: the last lanes of vzip_low's sequence."""
    if not isinstance(a, SimdVector) or a != b:
        return None
    return a(a, b), _zip_codegen(True)


@intrinsic
def vstore_interleaved3(typingctx, array, index, a, b, c):
    """array.flat[index : index + 3 * lanes] = a0, b0, c0, a1, b1, c1, ...: three planes into pixels."""
    if not isinstance(a, SimdVector) or a != b or a != c:
        return None

    def codegen(context, builder, sig, args):
        x, y, z = args[2:]
        lanes = x.type.count
        i32 = ir.IntType(32)
        both = builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, 2 * lanes), list(range(2 * lanes))))
        wide = builder.shuffle_vector(z, ir.Constant(z.type, ir.Undefined),
                                      ir.Constant(ir.VectorType(i32, 2 * lanes), list(range(lanes)) * 2))
        order = [index for k in range(lanes) for index in (k, lanes + k, 2 * lanes + k)]
        triple = builder.shuffle_vector(both, wide, ir.Constant(ir.VectorType(i32, 3 * lanes), order))
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(triple, builder.bitcast(pointer, triple.type.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, index, a, b, c), codegen


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise max(a, b) where a NaN in either propagates (a NaN in ``a`` stays, one in ``b`` is taken)."""
    if not isinstance(a, SimdVector) or a != b:
        return None

    def codegen(context, builder, sig, args):
        x, y = args
        take_y = builder.or_(builder.fcmp_ordered("<", x, y), builder.fcmp_unordered("uno", y, y))
        return builder.select(take_y, y, x)

    return a(a, b), codegen


@intrinsic
def vscale(typingctx, vector, scalar):
    """Every lane of ``vector`` times the scalar ``scalar``."""
    if not isinstance(vector, SimdVector):
        return None

    def codegen(context, builder, sig, args):
        factor = context.cast(builder, args[1], sig.args[1], sig.args[0].dtype)
        return builder.fmul(args[0], _broadcast(builder, args[0].type, factor))

    return vector(vector, scalar), codegen


@intrinsic
def vlanes(typingctx, array):
    """The number of lanes of a vector of ``array``'s dtype, as a compile-time constant."""
    lanes = SimdVector(array.dtype).lanes

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), lanes)

    return types.int64(array), codegen


@intrinsic
def vprefetch(typingctx, array, index):
    """A hint to bring the cache line holding array.flat[index] into L2 ahead of its use (llvm.prefetch
    with locality 2, prefetcht1 on x86: into L1 it gained 3-4% less, perf/NOTES.md session 15; it never
    faults, so index may lie past the array's end)."""
    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
        read, locality_l2, data = ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)
        builder.call(fn, [builder.bitcast(pointer, byte_pointer), read, locality_l2, data])
        return context.get_dummy_value()

    return types.none(array, index), codegen


@intrinsic
def vget(typingctx, vector, lane):
    """Lane ``lane`` of a vector, as a scalar."""
    if not isinstance(vector, SimdVector):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.extract_element(args[0], index)

    return vector.dtype(vector, lane), codegen


@intrinsic
def vput(typingctx, array, index, vector, lane):
    """array.flat[index] = lane ``lane`` of ``vector`` (a plain store: no negative-index check)."""
    if not isinstance(vector, SimdVector):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(builder.extract_element(args[2], context.cast(builder, args[3], sig.args[3], types.intp)),
                      pointer)
        return context.get_dummy_value()

    return types.none(array, index, vector, lane), codegen


@intrinsic
def vinsert(typingctx, vector, lane, array, index):
    """``vector`` with lane ``lane`` replaced by array.flat[index]."""
    if not isinstance(vector, SimdVector):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[2], args[2], args[3], sig.args[3])
        return builder.insert_element(args[0], builder.load(pointer), context.cast(builder, args[1], sig.args[1], types.intp))

    return vector(vector, lane, array, index), codegen


def _transpose(builder, rows):
    """The lanes x lanes transpose of ``rows`` (a list of ``lanes`` vectors): at each distance h = lanes/2,
    ..., 1, rows i and i + h (h-bit of i clear) swap their off-diagonal h-blocks, which transposes the
    matrix block by block; each swap is two shufflevectors that LLVM lowers to the ISA's unpack, shuffle
    and permute instructions."""
    lanes = len(rows)
    rows = list(rows)
    h = lanes // 2
    while h:
        first = [t if t & h == 0 else t - h + lanes for t in range(lanes)]
        second = [t + h if t & h == 0 else t + lanes for t in range(lanes)]
        for i in range(lanes):
            if i & h == 0:
                a, b = rows[i], rows[i + h]
                rows[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), lanes), first))
                rows[i + h] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), lanes), second))
        h //= 2
    return rows


@intrinsic
def vtranspose_copy(typingctx, src, src_index, src_stride, dst, dst_index, dst_stride):
    """A lanes x lanes block in registers: dst.flat[dst_index + j * dst_stride + i] =
    src.flat[src_index + i * src_stride + j] for i, j < lanes (lanes vector loads, the transpose, lanes
    vector stores).  Every index is in bounds by the caller's guarantee."""
    if src.dtype != dst.dtype:
        return None
    vector = SimdVector(src.dtype)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(vector)
        lanes = vector.lanes
        align = sig.args[0].dtype.bitwidth // 8
        src_base = context.cast(builder, args[1], sig.args[1], types.intp)
        src_step = context.cast(builder, args[2], sig.args[2], types.intp)
        dst_base = context.cast(builder, args[4], sig.args[4], types.intp)
        dst_step = context.cast(builder, args[5], sig.args[5], types.intp)
        src_data = context.make_array(sig.args[0])(context, builder, args[0]).data
        dst_data = context.make_array(sig.args[3])(context, builder, args[3]).data
        rows = []
        for i in range(lanes):
            offset = builder.add(src_base, builder.mul(src_step, ir.Constant(src_step.type, i)))
            pointer = builder.bitcast(builder.gep(src_data, [offset]), vector_type.as_pointer())
            rows.append(builder.load(pointer, align=align))
        for j, column in enumerate(_transpose(builder, rows)):
            offset = builder.add(dst_base, builder.mul(dst_step, ir.Constant(dst_step.type, j)))
            builder.store(column, builder.bitcast(builder.gep(dst_data, [offset]), vector_type.as_pointer()),
                          align=align)
        return context.get_dummy_value()

    return types.none(src, src_index, src_stride, dst, dst_index, dst_stride), codegen


@intrinsic
def vclamp(typingctx, vector, low, high):
    """Lanes below ``low`` become low, above ``high`` become high; NaN passes through (as np.clip)."""
    if not isinstance(vector, SimdVector):
        return None

    def codegen(context, builder, sig, args):
        value, lo, hi = args

        def splat(scalar, scalar_type):
            return _broadcast(builder, value.type, context.cast(builder, scalar, scalar_type, sig.args[0].dtype))

        lo_v, hi_v = splat(lo, sig.args[1]), splat(hi, sig.args[2])
        value = builder.select(builder.fcmp_ordered("<", value, lo_v), lo_v, value)
        return builder.select(builder.fcmp_ordered(">", value, hi_v), hi_v, value)

    return vector(vector, low, high), codegen


@intrinsic
def vhalf_broadcast(typingctx, vector, index):
    """Lane ``index`` of each half of the vector, copied across that half (a within-128-bit-lane
    broadcast, vpermilps on AVX2).  ``index`` must be a constant."""
    if not isinstance(vector, SimdVector) or not isinstance(index, types.IntegerLiteral):
        return None
    half = vector.lanes // 2
    lane = index.literal_value

    def codegen(context, builder, sig, args):
        vector_type = args[0].type
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [lane] * half + [half + lane] * half)
        return builder.shuffle_vector(args[0], ir.Constant(vector_type, ir.Undefined), mask)

    return vector(vector, index), codegen

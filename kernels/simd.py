"""A 256-bit vector of floats for Numba kernels: 8 float32 or 4 float64 lanes, held in a register.

Why. A fast convolution keeps a tile of partial sums in registers (4 output channels x 24
pixels = 12 vectors in kernels/conv_relu.py) while it streams through the inputs, and updates it
with one fused multiply-add per vector. Numba vectorises simple loops over arrays, but it cannot
keep such a tile in registers across the reduction loop, and it never emits the tile's
broadcast-and-FMA pattern: the same kernel written with scalars or small arrays runs at scalar
speed (about 10 GFLOP/s where the vector form reaches 80 on one core). LLVM, underneath Numba,
has vectors as a plain value type, so this module gives Numba one: `Vec`, a type whose value is
an LLVM <L x float> (L = 32 bytes / itemsize), and a handful of operations on it, each a few
lines of LLVM IR (numba.extending.intrinsic):

    vzero(dtype)            a vector of zeros                           (dtype: np.float32 ...)
    vload(a, i)             a[i : i + L]            (a 1-d, contiguous; no bounds check)
    vload_n(a, i, n)        a[i : i + n], zeros in lanes >= n           (masked: reads only n)
    vstore(a, i, v)         a[i : i + L] = v
    vstore_n(a, i, v, n)    a[i : i + n] = v[:n]                        (masked: writes only n)
    vbcast(a, i)            a[i] in every lane
    vfma(a, b, c)           a * b + c, lane by lane, one rounding (llvm.fma)
    vmax0(v)                max(v, 0) lane by lane (a ReLU; NaN stays NaN)
    vwhere_pos(m, v)        v where m > 0, else 0, lane by lane (ReLU's gradient, m = its output)
    vadd(a, b)              a + b lane by lane
    vsum(v)                 the sum of the lanes, in a fixed order: ((v0 + v1) + v2) + ...
    vsub(a, b)              a - b lane by lane
    vevens(a, b), vodds(a, b)   the even (odd) lanes of a then of b: a0 a2 .. b0 b2 ..
    vzip_lo(a, b), vzip_hi(a, b)   a's and b's lanes interleaved: a0 b0 a1 b1 .. (first half
                            of the lanes; second half)
    lanes(dtype)            L, a compile-time constant
    ld(a, i)                a[i] (a 1-d; no negative-index wrap-around, no bounds check)

None of them checks bounds: the kernels that use them compute their indices from shapes they
have checked. Every lane's arithmetic is IEEE (no fast-math flags), so a vector kernel gives the
numbers a scalar loop of fused multiply-adds in the same order would give, whatever the lane,
which is what tests/test_kernels_conv.py relies on.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 32                     # AVX2; LLVM splits or widens for other CPUs


class Vec(types.Type):
    """A vector of `lanes` values of `dtype` (a Numba float type)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // np.dtype(str(dtype)).itemsize
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


_I32 = ir.IntType(32)


def _splat(builder, vty, scalar):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _pointer(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


def _mask(builder, count, n):
    """<count x i1>: lane k < n."""
    iota = ir.Constant(ir.VectorType(ir.IntType(64), count), list(range(count)))
    n = builder.sext(n, ir.IntType(64)) if n.type.width < 64 else n
    return builder.icmp_signed("<", iota, _splat(builder, iota.type, n))


def _suffix(vty):
    return f"v{vty.count}{'f32' if isinstance(vty.element, ir.FloatType) else 'f64'}"


def _dtype_of(typ):
    """The float type named by `typ`: an array's dtype, a float scalar, or np.float32 itself."""
    if isinstance(typ, types.Array):
        return typ.dtype
    if isinstance(typ, (types.NumberClass, types.DType)):
        return typ.dtype
    return typ


@intrinsic
def vzero(typingctx, dtype):
    vt = Vec(_dtype_of(dtype))

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(dtype), codegen


@intrinsic
def lanes(typingctx, dtype):
    n = Vec(_dtype_of(dtype)).lanes

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), n)
    return types.intp(dtype), codegen


@intrinsic
def vload(typingctx, arr, idx):
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(vt)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)
    return vt(arr, idx), codegen


@intrinsic
def vload_n(typingctx, arr, idx, n):
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(vt)
        ptr = builder.bitcast(ptr, vty.as_pointer())
        fnty = ir.FunctionType(vty, [ptr.type, _I32, ir.VectorType(ir.IntType(1), vty.count), vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            f"llvm.masked.load.{_suffix(vty)}.p0")
        return builder.call(fn, [ptr, ir.Constant(_I32, 1), _mask(builder, vty.count, args[2]),
                                 ir.Constant(vty, None)])
    return vt(arr, idx, n), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def vstore_n(typingctx, arr, idx, v, n):
    def codegen(context, builder, sig, args):
        vty = args[2].type
        ptr = builder.bitcast(_pointer(context, builder, sig.args[0], args[0], args[1]),
                              vty.as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [vty, ptr.type, _I32,
                                               ir.VectorType(ir.IntType(1), vty.count)])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            f"llvm.masked.store.{_suffix(vty)}.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(_I32, 1), _mask(builder, vty.count, args[3])])
        return context.get_dummy_value()
    return types.none(arr, idx, v, n), codegen


@intrinsic
def vbcast(typingctx, arr, idx):
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        s = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1]))
        return _splat(builder, context.get_value_type(vt), s)
    return vt(arr, idx), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                            f"llvm.fma.{_suffix(vty)}")
        return builder.call(fn, list(args))
    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def vsub(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])
    return a(a, b), codegen


def _shuffle(order):
    """An intrinsic that picks lanes `order(L)` of the 2L lanes of (a, b)."""
    def typer(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            picks = order(sig.args[0].lanes)
            mask = ir.Constant(ir.VectorType(_I32, len(picks)), picks)
            return builder.shuffle_vector(args[0], args[1], mask)
        return a(a, b), codegen
    return intrinsic(typer)


vevens = _shuffle(lambda n: list(range(0, 2 * n, 2)))
vodds = _shuffle(lambda n: list(range(1, 2 * n, 2)))
vzip_lo = _shuffle(lambda n: [k // 2 + (n if k % 2 else 0) for k in range(n)])
vzip_hi = _shuffle(lambda n: [n // 2 + k // 2 + (n if k % 2 else 0) for k in range(n)])


@intrinsic
def vmax0(typingctx, v):
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        # v if v > 0 or v is NaN, else 0: a NaN goes through, as in np.maximum(v, 0), so that a
        # diverged run shows NaN in its loss instead of zeros
        return builder.select(builder.fcmp_unordered(">", args[0], zero), args[0], zero)
    return v(v), codegen


@intrinsic
def vwhere_pos(typingctx, m, v):
    if not (isinstance(m, Vec) and m == v):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", args[0], zero), args[1], zero)
    return v(m, v), codegen


@intrinsic
def vsum(typingctx, v):
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        s = builder.extract_element(args[0], ir.Constant(_I32, 0))
        for k in range(1, sig.args[0].lanes):
            s = builder.fadd(s, builder.extract_element(args[0], ir.Constant(_I32, k)))
        return s
    return v.dtype(v), codegen


@intrinsic
def ld(typingctx, arr, idx):
    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1]))
    return arr.dtype(arr, idx), codegen

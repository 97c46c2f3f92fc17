"""LLVM operations Numba has no function for, as ``numba.core.extending.intrinsic``s the CPU kernels call."""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic


def _transpose_copy(unit):
    def transpose_copy(typingctx, src, s0, s_step, dst, d0, d_step):
        """Copy a block of R x R *units* transposed, a unit being ``unit`` consecutive elements and a row 64 bytes
        (N = 16 float32 or 8 float64 elements, R = N / unit units): row k of the block is ``src[s0 + k*s_step :
        + N]``, and row j of its transpose, the j-th unit of every source row side by side, is stored at
        ``dst[d0 + j*d_step : + N]``. R vector loads, log2(R) rounds of R two-input shuffles, R vector stores (Numba
        has no shuffle of its own: the copy element by element, a load and a store each, cost most of a lanes
        kernel's time). The caller keeps every row in bounds."""
        if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype
                and src.dtype in (types.float32, types.float64)):
            return None
        n = 64 // (src.dtype.bitwidth // 8)
        if n % unit:
            return None
        rows_per_block = n // unit
        sig = types.void(src, s0, s_step, dst, d0, d_step)

        def codegen(context, builder, signature, args):
            src_ty, s0_ty, ss_ty, dst_ty, d0_ty, ds_ty = signature.args
            src_v, s0_v, ss_v, dst_v, d0_v, ds_v = args
            src_data = context.make_array(src_ty)(context, builder, src_v).data
            dst_data = context.make_array(dst_ty)(context, builder, dst_v).data
            vec = ir.VectorType(context.get_data_type(src_ty.dtype), n)
            align = 64 // n

            def row_pointer(data, start, step, k):
                offset = builder.add(start, builder.mul(step, ir.Constant(ir.IntType(64), k)))
                return builder.bitcast(builder.gep(data, [offset]), vec.as_pointer())

            s0_i, ss_i = (context.cast(builder, v, t, types.int64) for v, t in ((s0_v, s0_ty), (ss_v, ss_ty)))
            d0_i, ds_i = (context.cast(builder, v, t, types.int64) for v, t in ((d0_v, d0_ty), (ds_v, ds_ty)))
            rows = []
            for k in range(rows_per_block):
                load = builder.load(row_pointer(src_data, s0_i, ss_i, k))
                load.align = align
                rows.append(load)
            mask_ty = ir.VectorType(ir.IntType(32), n)
            bit = 1
            while bit < rows_per_block:  # swap bit `bit` of the row index with that of the unit index
                rows = [builder.shuffle_vector(rows[r & ~bit], rows[r | bit], ir.Constant(mask_ty, [
                    (n if (e // unit) & bit else 0) + (((e // unit) & ~bit) | (r & bit)) * unit + e % unit
                    for e in range(n)])) for r in range(rows_per_block)]
                bit <<= 1
            for j in range(rows_per_block):
                store = builder.store(rows[j], row_pointer(dst_data, d0_i, ds_i, j))
                store.align = align
            return context.get_dummy_value()

        return sig, codegen

    # Numba names (and caches) an intrinsic by these: one name per unit size
    transpose_copy.__name__ = transpose_copy.__qualname__ = f"transpose_copy_{unit}"
    return intrinsic(transpose_copy)


# transpose_copy_<u>: the block transpose for units of u elements (1: the plain N x N transpose of elements).
transpose_copy_1, transpose_copy_2, transpose_copy_4, transpose_copy_8 = (_transpose_copy(u) for u in (1, 2, 4, 8))


# llvm.prefetch's arguments: read (0) or write (1); locality 0-3 (3: keep in every cache level); data cache (1).
_PREFETCH_READ, _PREFETCH_WRITE, _LOCALITY_ALL, _DATA_CACHE = 0, 1, 3, 1


def _prefetch(rw, name):
    def prefetch(typingctx, array, index):
        """Ask the cache for the line holding ``array[index]`` (``index`` a tuple with one integer per axis), to be
        read (``prefetch_read``) or written (``prefetch_write``) soon. A hint: nothing is loaded into a register,
        and an address outside the array cannot fault (x86 drops such a prefetch), though callers keep it inside."""
        if not (isinstance(array, types.Array) and isinstance(index, types.BaseTuple) and len(index) == array.ndim
                and all(isinstance(i, types.Integer) for i in index)):
            return None
        sig = types.void(array, index)

        def codegen(context, builder, signature, args):
            array_ty, index_ty = signature.args
            ary = context.make_array(array_ty)(context, builder, args[0])
            indices = [context.cast(builder, v, t, types.intp)
                       for v, t in zip(cgutils.unpack_tuple(builder, args[1]), index_ty)]
            ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                            cgutils.unpack_tuple(builder, ary.strides), array_ty.layout, indices,
                                            wraparound=False, boundscheck=False)
            byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32]), "llvm.prefetch.p0i8")
            builder.call(fn, [byte_ptr, ir.Constant(i32, rw), ir.Constant(i32, _LOCALITY_ALL),
                              ir.Constant(i32, _DATA_CACHE)])
            return context.get_dummy_value()

        return sig, codegen

    prefetch.__name__ = prefetch.__qualname__ = name  # Numba names (and caches) an intrinsic by these
    return prefetch


prefetch_read = intrinsic(_prefetch(_PREFETCH_READ, "prefetch_read"))
prefetch_write = intrinsic(_prefetch(_PREFETCH_WRITE, "prefetch_write"))

"""How a convolution and its two gradients are written in ONNX ops, chosen from the sizes.

Every choice is exact (the same sums, only in another order or with zeros left out) and is made
at compile time, where every spatial size is known. It matters in a training step: there the
weights are inputs, so onnxruntime cannot use its NCHWc kernels (they need constant weights),
and its plain Conv / ConvTranspose run one example at a time, a matrix-vector product per
example on a 1x1 map, bound by reading the weight once per example. In order of preference:

- matmul: one output position whose window lies inside the input (after the next rule): forward,
  input gradient and weight gradient are one Gemm each over the whole batch;
- dense: maps hardly larger than the kernel (2x2 under 3x3): the convolution is one matrix
  [M x out positions, C x in positions] built from the weight, and all three passes are Gemms
  (the weight gradient only where the matrix has few zeros);
- kernel taps that only ever meet padding are dropped (3x3 on a 1x1 map keeps its centre): the
  weight is restricted to the kept taps and the weight gradient put back with zeros;
- otherwise Conv forward; the input gradient a Conv with the weight flipped (stride 1, many
  channels, larger maps; grouped, at any size), or (on the CPU, 2-D, small columns) one MatMul
  to columns and Col2Im, or a ConvTranspose; the weight gradient a Conv over transposed operands (every group in one
  grouped Conv), or one Gemm per kernel tap from 16 input channels.

Each form is a constant number of nodes whatever the group count. The portable target (ops/emit.py)
keeps to what onnx's reference evaluator and OpenVINO run (its Conv form has the batch in its
weight's shape): there the weight gradient is one Gemm per kernel tap, or grouped, a product with
the unfolded input; a grouped input gradient is a Conv over the zero-spread gradient.

All of that is for onnxruntime's CPU kernels. On CUDA (target "cuda") a small step is bound by
launching kernels, one or more per ONNX node, not by arithmetic: there every convolution is
Conv forward, ConvTranspose for the input gradient and one Conv over transposed operands for the
weight gradient, cuDNN's kernels each, the fewest nodes (ResNet-18's step on 3x32x32: see
docs/performance.md).

`python bench/conv_forms.py` times each formulation per layer; the thresholds below come from
it (docs/performance.md has the table).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .common import onnx_pads


@dataclass(frozen=True)
class ConvGeo:
    """A convolution's geometry with the sizes it runs at: input `size` -> output `out` per axis."""
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    groups: int
    size: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def axes(self) -> list[int]:
        return list(range(2, 2 + len(self.kernel)))


@dataclass(frozen=True)
class Form:
    """What the lowering emits for one convolution: `geo` after dropping dead taps (taps[i] is
    the kept range [a, b) of the original kernel along axis i), and whether it is a matrix product."""
    geo: ConvGeo
    taps: tuple[tuple[int, int], ...]
    matmul: bool
    full_kernel: tuple[int, ...]
    dense: bool = False  # forward and input gradient through the dense matrix
    dense_weight: bool = False  # the weight gradient too

    @property
    def pruned(self) -> bool:
        return any(a > 0 or b < k for (a, b), k in zip(self.taps, self.full_kernel))


def _pairs(size: int, k: int, s: int, d: int, pb: int, out: int) -> list[tuple[int, int, int]]:
    """(output position, tap, input position) along one axis, for every tap that meets the input."""
    return [(o, t, o * s - pb + t * d) for o in range(out) for t in range(k) if 0 <= o * s - pb + t * d < size]


def _live(size: int, k: int, s: int, d: int, pb: int, out: int) -> tuple[int, int]:
    """The hull [a, b) of the kernel taps that meet the input at some output position."""
    live = sorted({t for _, t, _ in _pairs(size, k, s, d, pb, out)})
    return (live[0], live[-1] + 1) if live else (0, k)


def choose(geo: ConvGeo, target: str = "cpu") -> Form:
    """The cheapest exact formulation of a convolution with this geometry on `target`'s
    onnxruntime provider (see the module doc)."""
    n = len(geo.kernel)
    if target == "cuda" or any(isinstance(v, str) for v in geo.size + geo.out):
        return Form(geo, tuple((0, k) for k in geo.kernel), False, geo.kernel)
    taps, kernel, pads, fits = [], [], [], []
    for i in range(n):
        k, s, d, (pb, _) = geo.kernel[i], geo.stride[i], geo.dilation[i], geo.pads[i]
        a, b = _live(geo.size[i], k, s, d, pb, geo.out[i])
        kb = b - a
        pb2 = pb - a * d
        pe2 = (geo.out[i] - 1) * s + (kb - 1) * d + 1 - geo.size[i] - pb2
        taps.append((a, b))
        kernel.append(kb)
        pads.append((pb2, pe2))
        # one output position whose window starts at the input's first element, inside it
        fits.append(geo.out[i] == 1 and pb2 == 0 and pe2 <= 0 and (kb == 1 or d == 1))
    matmul = geo.groups == 1 and all(fits)
    if matmul:
        new = replace(geo, kernel=tuple(kernel), pads=tuple((0, 0) for _ in range(n)), dilation=(1,) * n)
        return Form(new, tuple(taps), True, geo.kernel)
    waste = _dense_waste(geo) if geo.groups == 1 else np.inf
    if waste <= (DENSE_STRIDED_MAX_WASTE if any(s > 1 for s in geo.stride) else DENSE_MAX_WASTE):
        return Form(geo, tuple((0, k) for k in geo.kernel), False, geo.kernel, dense=True,
                    dense_weight=waste <= DENSE_MAX_WASTE)
    dropped = any(a > 0 or b < k for (a, b), k in zip(taps, geo.kernel))
    if dropped and all(pb >= 0 and pe >= 0 for pb, pe in pads):
        return Form(replace(geo, kernel=tuple(kernel), pads=tuple(pads)), tuple(taps), False, geo.kernel)
    return Form(geo, tuple((0, k) for k in geo.kernel), False, geo.kernel)


# A convolution over maps hardly larger than its kernel is written as one matrix
# [out positions * M, in positions * C] built from the weight, when that matrix's zeros (pairs
# of positions no tap connects) add at most this share to the multiply-adds. ResNet-18's third
# stage on 32x32 images (2x2 maps, 3x3 kernels) has none: each of the 16 pairs is a tap.
# onnxruntime's strided Conv and ConvTranspose are slow for their work, so a strided convolution
# goes dense up to twice that share, for its forward and input gradient only: ResNet-18's 4x4 ->
# 2x2 stride-2 convolution (128 -> 256 channels, 64 pairs for 25 links) is faster dense in those
# two, but its weight gradient is faster per tap. A stride-1 4x4 map has the same share (256
# pairs, 100 links) and loses; 8x8 -> 4x4 with stride 2 (8.5) loses in every pass (figures:
# docs/performance.md).
DENSE_MAX_WASTE = 1.5
DENSE_STRIDED_MAX_WASTE = 3.0


def _dense_waste(geo: ConvGeo) -> float:
    """(out positions x in positions) / pairs a tap links: the dense matrix's size over its nonzeros."""
    n = len(geo.kernel)
    links = np.prod([len(_pairs(geo.size[i], geo.kernel[i], geo.stride[i], geo.dilation[i], geo.pads[i][0], geo.out[i]))
                     for i in range(n)])
    if int(np.prod(geo.out)) <= 1 or links == 0:
        return np.inf
    return float(np.prod(geo.out) * np.prod(geo.size) / links)


def _dense_matrix(geo: ConvGeo) -> np.ndarray:
    """0/1 [taps, out positions * in positions]: which tap links each pair of positions."""
    n = len(geo.kernel)
    P, Q = int(np.prod(geo.out)), int(np.prod(geo.size))
    m = np.zeros((int(np.prod(geo.kernel)), P * Q), np.float32)
    per_axis = [_pairs(geo.size[i], geo.kernel[i], geo.stride[i], geo.dilation[i], geo.pads[i][0], geo.out[i])
                for i in range(n)]
    for combo in np.ndindex(*(len(a) for a in per_axis)):
        o, t, q = zip(*(per_axis[i][combo[i]] for i in range(n)))
        p_flat, q_flat = np.ravel_multi_index(o, geo.out), np.ravel_multi_index(q, geo.size)
        m[np.ravel_multi_index(t, geo.kernel), p_flat * Q + q_flat] = 1.0
    return m


def _dense_weight(g, w, geo: ConvGeo, M: int, C: int):
    """The convolution as a matrix [M * out positions, C * in positions] (exact: each entry is one
    weight times 1 plus zeros): w [M, 1, C, taps] @ links [P, taps, Q] broadcasts to [M, P, C, Q]
    with no transpose (the transposed product took twice as long)."""
    P, Q, K = int(np.prod(geo.out)), int(np.prod(geo.size)), int(np.prod(geo.kernel))
    links = _dense_matrix(geo).reshape(K, P, Q).transpose(1, 0, 2).copy()
    wb = g.node("MatMul", [g.node("Reshape", [w, _i64(g, "w_m1ck", [M, 1, C, K])]), g.const("links", links)])
    return g.node("Reshape", [wb, _i64(g, "w_dense", [M * P, C * Q])])


def _dense_weight_grad(g, dwb, geo: ConvGeo, M: int, C: int, out):
    """Back from the dense matrix's gradient [M * P, C * Q] to the kernel's [M, C, *kernel]:
    [M, P, C, Q] @ links [P, Q, taps], summed over the output positions P."""
    P, Q, K = int(np.prod(geo.out)), int(np.prod(geo.size)), int(np.prod(geo.kernel))
    links = _dense_matrix(geo).reshape(K, P, Q).transpose(1, 2, 0).copy()
    per_p = g.node("MatMul", [g.node("Reshape", [dwb, _i64(g, "g_mpcq", [M, P, C, Q])]), g.const("links_t", links)])
    dw = g.node("ReduceSum", [per_p, _i64(g, "p_axis", [1])], keepdims=0)
    return g.node("Reshape", [dw, _i64(g, "w_shape", [M, C, *geo.kernel])], out=out)


def _i64(g, suffix, values):
    return g.const(suffix, list(values), np.int64)


def _tap_matrix(form: Form) -> np.ndarray:
    """0/1 matrix [kept taps, all taps]: row i has its 1 at the position of kept tap i in the kernel."""
    kept = [range(a, b) for a, b in form.taps]
    m = np.zeros((int(np.prod(form.geo.kernel)), int(np.prod(form.full_kernel))), np.float32)
    for i, tap in enumerate(np.ndindex(*form.geo.kernel)):
        m[i, np.ravel_multi_index(tuple(r[t] for r, t in zip(kept, tap)), form.full_kernel)] = 1.0
    return m


# Taking taps out of a kernel, or putting them back, is a product with a constant 0/1 matrix
# (exact: each result is one value times 1 plus zeros). onnxruntime's Slice and Pad copy one
# innermost row at a time, so slicing a [512, 512, 3, 3] weight to [512, 512, 1, 1] and padding
# its gradient back are each several times slower than the product (figures: docs/performance.md).

def _taps_of(g, w, form: Form, lead: list[int], shape: list[int]):
    """The weight [*lead, *kernel] restricted to the kept taps, reshaped to `shape`."""
    if not form.pruned:
        return w if shape == [*lead, *form.full_kernel] else g.node("Reshape", [w, _i64(g, "w_shape", shape)])
    flat = g.node("Reshape", [w, _i64(g, "w_taps", [int(np.prod(lead)), -1])])
    kept = g.node("MatMul", [flat, g.const("tap_pick", _tap_matrix(form).T.copy())])
    return g.node("Reshape", [kept, _i64(g, "w_kept", shape)])


def _place_taps(g, dw, form: Form, lead: list[int], out):
    """A weight gradient [*lead, *kept kernel] put back in the full kernel, zeros elsewhere."""
    flat = g.node("Reshape", [dw, _i64(g, "g_taps", [int(np.prod(lead)), -1])])
    placed = g.node("MatMul", [flat, g.const("tap_place", _tap_matrix(form))])
    return g.node("Reshape", [placed, _i64(g, "g_full", [*lead, *form.full_kernel])], out=out)


def _window_of(g, x, form: Form):
    """For a matrix-product conv: the part of the input its single window reads."""
    geo = form.geo
    if geo.kernel == geo.size:
        return x
    return g.node("Slice", [x, _i64(g, "x_win0", [0] * len(geo.kernel)), _i64(g, "x_win1", geo.kernel),
                            _i64(g, "x_axes", geo.axes)])


def forward(g, x, w, bias, form: Form, channels: int, channels_in: int, out):
    geo = form.geo
    lead = [channels, channels_in // geo.groups]
    if form.dense:
        y = g.node("Gemm", [g.node("Flatten", [x], axis=1), _dense_weight(g, w, geo, channels, channels_in)], transB=1)
        y = g.node("Reshape", [y, _i64(g, "y_shape", [0, channels, *geo.out])], out=None if bias else out)
        if not bias:
            return y
        return g.node("Add", [y, g.node("Reshape", [bias, _i64(g, "b_shape", [channels] + [1] * len(geo.out))])], out=out)
    if form.matmul:
        xf = g.node("Flatten", [_window_of(g, x, form)], axis=1)
        wf = _taps_of(g, w, form, lead, [channels, -1])
        y = g.node("Gemm", [xf, wf] + ([bias] if bias else []), transB=1)
        return g.node("Reshape", [y, _i64(g, "y_shape", [0, channels] + [1] * len(geo.kernel))], out=out)
    wt = _taps_of(g, w, form, lead, [*lead, *geo.kernel])
    return g.node("Conv", [x, wt] + ([bias] if bias else []), out=out, kernel_shape=list(geo.kernel),
                  strides=list(geo.stride), dilations=list(geo.dilation), pads=onnx_pads(geo.pads), group=geo.groups)


def output_padding(geo: ConvGeo) -> list[int]:
    """ConvTranspose's output_padding that gives back exactly the conv input's size."""
    out = []
    for i, size in enumerate(geo.size):
        produced = (geo.out[i] - 1) * geo.stride[i] - geo.pads[i][0] - geo.pads[i][1] + \
            geo.dilation[i] * (geo.kernel[i] - 1) + 1
        out.append(size - produced)
    return out


def grad_input(g, gy, w, form: Form, channels_out: int, channels_in: int, out):
    geo = form.geo
    lead = [channels_out, channels_in // geo.groups]
    if form.dense:
        dx = g.node("Gemm", [g.node("Flatten", [gy], axis=1), _dense_weight(g, w, geo, channels_out, channels_in)])
        return g.node("Reshape", [dx, _i64(g, "x_shape", [0, channels_in, *geo.size])], out=out)
    if form.matmul:
        gf = g.node("Flatten", [gy], axis=1)
        wf = _taps_of(g, w, form, lead, [channels_out, -1])
        dx = g.node("Gemm", [gf, wf])
        pad_end = [s - k for s, k in zip(geo.size, geo.kernel)]
        dx = g.node("Reshape", [dx, _i64(g, "x_shape", [0, channels_in, *geo.kernel])], out=None if any(pad_end) else out)
        if not any(pad_end):
            return dx
        return g.node("Pad", [dx, _i64(g, "x_pad", [0, 0] + [0] * len(pad_end) + [0, 0] + pad_end)], out=out)
    wt = _taps_of(g, w, form, lead, [*lead, *geo.kernel])
    if g.cpu_kernels and _flip_pays(geo, channels_out):
        return transposed_as_conv(g, gy, wt, geo, channels_out, channels_in, out)
    if g.cpu_kernels and _col2im_pays(geo, channels_in):
        return _grad_input_col2im(g, gy, wt, geo, lead, out)
    if geo.groups > 1 and transposed_portable(geo) and (
            g.target == "portable" or g.cpu_kernels and all(s == 1 for s in geo.stride)):
        # at stride 1 also onnxruntime's faster form: EfficientNet-B0's depthwise input gradients
        # take 0.35 to 0.6 of ConvTranspose's time (at stride 2, with the zeros spread, 2 to 3 times it)
        return transposed_as_conv(g, gy, wt, geo, channels_out, channels_in, out)
    return g.node("ConvTranspose", [gy, wt], out=out, kernel_shape=list(geo.kernel), strides=list(geo.stride),
                  dilations=list(geo.dilation), pads=onnx_pads(geo.pads), group=geo.groups,
                  output_padding=output_padding(geo))


def transposed_portable(geo: ConvGeo) -> bool:
    """Whether `transposed_as_conv` can write this transposed convolution (each begin pad at most
    the kernel's span: the Conv's own pads stay >= 0; sizes known)."""
    if any(isinstance(v, str) for v in geo.size + geo.out):
        return False
    return all(b <= (k - 1) * d and L - ((o - 1) * s + 1) + b >= 0
               for k, d, s, (b, _), L, o in zip(geo.kernel, geo.dilation, geo.stride, geo.pads, geo.size, geo.out))


def transposed_as_conv(g, y, w, geo: ConvGeo, M: int, C: int, out, bias=None):
    """ONNX ConvTranspose(y [N, M, *out], w [M, C/G, *kernel]) -> [N, C, *size], G groups, as a Conv
    (onnx's reference evaluator gets a grouped ConvTranspose wrong): y with stride - 1 zeros
    between its elements, convolved by the kernel flipped in space with its two channel axes
    swapped in each group, padded by (kernel - 1) * dilation - pad."""
    n, G = len(geo.kernel), geo.groups
    K = int(np.prod(geo.kernel))
    if any(s > 1 for s in geo.stride):  # [N, M, o1, 1, o2, 1] padded to [N, M, o1, s1, o2, s2], merged, cut
        spread = g.node("Reshape", [y, _i64(g, "y_spread", [0, M, *(v for o in geo.out for v in (o, 1))])])
        ends = [v for s in geo.stride for v in (0, s - 1)]
        spread = g.node("Pad", [spread, _i64(g, "y_zeros", [0] * (2 + 2 * n) + [0, 0] + ends)])
        spread = g.node("Reshape", [spread, _i64(g, "y_merged", [0, M, *(o * s for o, s in zip(geo.out, geo.stride))])])
        y = g.node("Slice", [spread, _i64(g, "y_s0", [0] * n), _i64(g, "y_s1", [(o - 1) * s + 1 for o, s in zip(geo.out, geo.stride)]),
                             _i64(g, "y_axes", geo.axes)])
    flip = np.eye(K, dtype=np.float32)[::-1].copy()
    wg = g.node("Transpose", [g.node("Reshape", [w, _i64(g, "w_gmck", [G, M // G, C // G, K])])], perm=[0, 2, 1, 3])
    wf = g.node("Reshape", [g.node("MatMul", [wg, g.const("flip", flip)]), _i64(g, "w_flipped", [C, M // G, *geo.kernel])])
    pads = [((k - 1) * d - b, L - ((o - 1) * s + 1) + b)
            for k, d, s, (b, _), L, o in zip(geo.kernel, geo.dilation, geo.stride, geo.pads, geo.size, geo.out)]
    return g.node("Conv", [y, wf] + ([bias] if bias else []), out=out, kernel_shape=list(geo.kernel),
                  dilations=list(geo.dilation), pads=onnx_pads(pads), group=G if G > 1 else None)


# With stride 1 the input gradient is also a plain Conv of the output gradient by the weight
# flipped in space, channels swapped, padded by (kernel - 1) * dilation - pad (transposed_as_conv,
# with no zeros to spread). onnxruntime's
# Conv beats its ConvTranspose from 32 channels on maps of 64 positions or more (64 channels on
# 8x8 and 56x56 maps) and loses below (LeNet's 16 channels on 10x10; figures: docs/performance.md).
FLIP_MIN_CHANNELS, FLIP_MIN_POSITIONS = 32, 64


def _flip_pays(geo: ConvGeo, channels_out: int) -> bool:
    return (geo.groups == 1 and all(s == 1 for s in geo.stride) and channels_out >= FLIP_MIN_CHANNELS
            and not any(isinstance(v, str) for v in geo.out) and np.prod(geo.out) >= FLIP_MIN_POSITIONS
            and all((k - 1) * d - b >= 0 and (k - 1) * d - e >= 0
                    for k, d, (b, e) in zip(geo.kernel, geo.dilation, geo.pads)))


# Otherwise the input gradient is the columns w^T @ gy of all examples in one MatMul, put back by
# Col2Im (onnxruntime has it for the CPU only, in a training step chosen only for the CPU). It
# beats ConvTranspose, which runs one example at a time, while an example's columns are small
# (LeNet's 16 -> 6 channels on 10x10; 64 channels 16x16), and loses on larger ones (64 -> 128
# channels 56x56 -> 28x28; figures: docs/performance.md).
COL2IM_MAX_COLUMNS = 160_000  # values of an example's columns, C x taps x output positions


def _col2im_pays(geo: ConvGeo, channels_in: int) -> bool:
    # 2-D only: onnxruntime's N-D Col2Im mishandles pads and strides (onnxruntime issue 18156)
    return (len(geo.kernel) == 2 and geo.groups == 1 and not any(isinstance(v, str) for v in geo.out)
            and all(b >= 0 and e >= 0 for b, e in geo.pads)
            and channels_in * np.prod(geo.kernel) * np.prod(geo.out) <= COL2IM_MAX_COLUMNS)


def _grad_input_col2im(g, gy, w, geo: ConvGeo, lead: list[int], out):
    """The columns [N, C x taps, positions] = w^T [C x taps, M] @ gy [N, M, positions], one
    batched MatMul; Col2Im adds each column back into the window it came from."""
    M, C = lead
    K = int(np.prod(geo.kernel))
    wt = g.node("Transpose", [g.node("Reshape", [w, _i64(g, "w_rows", [M, C * K])])], perm=[1, 0])
    cols = g.node("MatMul", [wt, g.node("Reshape", [gy, _i64(g, "g_cols", [0, M, -1])])])
    return g.node("Col2Im", [cols, _i64(g, "x_size", geo.size), _i64(g, "block", geo.kernel)], out=out,
                  strides=list(geo.stride), dilations=list(geo.dilation), pads=onnx_pads(geo.pads))


def grad_weight(g, gy, x, form: Form, channels_in: int, channels_out: int, out):
    geo = form.geo
    lead = [channels_out, channels_in // geo.groups]
    if form.dense_weight:
        dwb = g.node("Gemm", [g.node("Flatten", [gy], axis=1), g.node("Flatten", [x], axis=1)], transA=1)
        return _dense_weight_grad(g, dwb, geo, channels_out, channels_in, out)
    if form.matmul:
        gf = g.node("Flatten", [gy], axis=1)
        xf = g.node("Flatten", [_window_of(g, x, form)], axis=1)
        dw = g.node("Gemm", [gf, xf], transA=1)
        if form.pruned:
            return _place_taps(g, dw, form, lead, out)
        return g.node("Reshape", [dw, _i64(g, "w_shape", [*lead, *geo.kernel])], out=out)
    if geo.groups == 1 and (g.target == "portable" or g.target == "cpu" and channels_in >= MIN_CHANNELS_PER_TAP):
        weight_grad = _grad_weight_per_tap
    elif g.target == "portable":
        weight_grad = _grad_weight_unfolded
    else:
        weight_grad = _grad_weight_conv
    dw = weight_grad(g, gy, x, geo, channels_in, channels_out, None if form.pruned else out)
    return _place_taps(g, dw, form, lead, out) if form.pruned else dw


# Below this many input channels the weight gradient stays a Conv (LeNet's 6-channel conv is
# slower per tap). From 64 channels up the per-tap products take well under the Conv's time, the
# more so the smaller the maps (figures: docs/performance.md).
MIN_CHANNELS_PER_TAP = 16


def _grad_weight_per_tap(g, gy, x, geo: ConvGeo, C: int, M: int, out):
    """dW[:, :, tap] = gy [M, positions * N] @ x at that tap [positions * N, C], one Gemm per
    kernel tap. With the spatial axes moved in front ([*spatial, N, C]), each tap's strided
    Slice copies whole [N, C] blocks, where a channels-first slice copies a row at a time."""
    n = len(geo.kernel)
    rank = n + 2
    xt = g.node("Transpose", [x], perm=[*range(2, rank), 0, 1])
    if any(b or e for b, e in geo.pads):
        xt = g.node("Pad", [xt, _i64(g, "x_pad", [*(b for b, _ in geo.pads), 0, 0, *(e for _, e in geo.pads), 0, 0])])
    gt = g.node("Transpose", [gy], perm=[1, *range(2, rank), 0])
    gf = g.node("Reshape", [gt, _i64(g, "g_rows", [M, -1])])
    axes, steps, rows = _i64(g, "tap_axes", range(n)), _i64(g, "tap_steps", geo.stride), _i64(g, "tap_rows", [-1, C])
    last = _i64(g, "tap_axis", [2])
    taps = []
    for t in np.ndindex(*geo.kernel):
        start = [t[i] * geo.dilation[i] for i in range(n)]
        end = [start[i] + geo.stride[i] * (geo.out[i] - 1) + 1 for i in range(n)]
        key = "_".join(map(str, t))
        xs = g.node("Slice", [xt, _i64(g, f"tap_s{key}", start), _i64(g, f"tap_e{key}", end), axes, steps])
        dw = g.node("Gemm", [gf, g.node("Reshape", [xs, rows])])
        taps.append(g.node("Unsqueeze", [dw, last]))
    dw = g.node("Concat", taps, axis=2) if len(taps) > 1 else taps[0]
    return g.node("Reshape", [dw, _i64(g, "w_shape", [M, C, *geo.kernel])], out=out)


def _unfold(g, x, geo: ConvGeo, C: int):
    """The columns of x, [N, C x taps, *out] (channel c's tap t at c * taps + t): one grouped Conv
    by a constant 0/1 kernel, each of its C x taps filters picking one tap of one channel."""
    K = int(np.prod(geo.kernel))
    pick = np.tile(np.eye(K, dtype=np.float32).reshape(K, 1, *geo.kernel), (C, 1, *([1] * len(geo.kernel))))
    return g.node("Conv", [x, g.const("unfold", pick)], kernel_shape=list(geo.kernel), strides=list(geo.stride),
                  dilations=list(geo.dilation), pads=onnx_pads(geo.pads), group=C)


def _grad_weight_unfolded(g, gy, x, geo: ConvGeo, C: int, M: int, out):
    """A grouped convolution's weight gradient in the same few nodes whatever its group count:
    per group, dW_g [M/G, C/G x taps] = gy_g [M/G, N x positions] @ columns_g [N x positions, C/G x taps],
    all groups in one batched MatMul over the unfolded input. Depthwise (one channel in and out
    per group): an elementwise product summed over examples and positions."""
    G, K = geo.groups, int(np.prod(geo.kernel))
    cg, mg = C // G, M // G
    cols = g.node("Reshape", [_unfold(g, x, geo, C), _i64(g, "cols_ngkp", [0, G, cg * K, -1])])
    if cg == 1 and mg == 1:
        gr = g.node("Reshape", [gy, _i64(g, "g_ng1p", [0, G, 1, -1])])
        dw = g.node("ReduceSum", [g.node("Mul", [cols, gr]), _i64(g, "np_axes", [0, 3])], keepdims=0)
    else:
        ct = g.node("Reshape", [g.node("Transpose", [cols], perm=[1, 0, 3, 2]), _i64(g, "cols_g", [G, -1, cg * K])])
        gr = g.node("Reshape", [gy, _i64(g, "g_ngmp", [0, G, mg, -1])])
        gt = g.node("Reshape", [g.node("Transpose", [gr], perm=[1, 2, 0, 3]), _i64(g, "g_g", [G, mg, -1])])
        dw = g.node("MatMul", [gt, ct])
    return g.node("Reshape", [dw, _i64(g, "w_shape", [M, cg, *geo.kernel])], out=out)


def _grad_weight_conv(g, gy, x, geo: ConvGeo, C: int, M: int, out):
    """x as [C/G, G x N, H, W] convolved by gy as [M, N, OH, OW] in G groups gives
    [C/G, M, KH', KW'] with KH' >= KH (the forward stride becomes a dilation and the forward
    dilation a stride): one Conv whatever the group count. Its weight holds the batch, a shape
    known only at run time, which OpenVINO's CPU plugin refuses (the portable target unfolds)."""
    n, G = len(geo.kernel), geo.groups
    space = list(range(3, n + 3))
    if G == 1:
        xt = g.node("Transpose", [x], perm=[1, 0, *range(2, n + 2)])
        gt = g.node("Transpose", [gy], perm=[1, 0, *range(2, n + 2)])
    else:
        xg = g.node("Reshape", [x, _i64(g, "x_ngc", [0, G, C // G, *geo.size])])
        xt = g.node("Reshape", [g.node("Transpose", [xg], perm=[2, 1, 0, *space]), _i64(g, "x_c_gn", [C // G, -1, *geo.size])])
        gg = g.node("Reshape", [gy, _i64(g, "g_ngm", [0, G, M // G, *geo.out])])
        gt = g.node("Reshape", [g.node("Transpose", [gg], perm=[1, 2, 0, *space]), _i64(g, "g_m_n", [M, -1, *geo.out])])
    wt = g.node("Conv", [xt, gt], strides=list(geo.dilation), dilations=list(geo.stride), pads=onnx_pads(geo.pads),
                group=G if G > 1 else None)
    wt = g.node("Slice", [wt, _i64(g, "k0", [0] * n), _i64(g, "k1", geo.kernel), _i64(g, "ka", geo.axes)])
    return g.node("Transpose", [wt], perm=[1, 0, *range(2, n + 2)], out=out)

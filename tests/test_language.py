"""The language: each construct builds the graph it should, and the graph computes
what the numpy reference computes."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import errors_of, onnx_matches_reference

import almc


def ops_of(m):
    return [n.op for n in m.graph.nodes() if n.op != "input"]


def test_pipe_positional_and_keyword_arguments():
    m = almc.load("""
model M {
    input x: f32[N, 3, 8, 8]
    y = conv(x, 4, kernel = 3, pad = 1)
        |> relu
        |> maxpool(2)
    output o = y
}""")
    assert ops_of(m) == ["conv", "relu", "maxpool"]
    assert str(m.outputs["o"]) == "f32[N, 4, 4, 4]"
    conv = m.graph.node("y.conv")
    assert (conv.attrs.channels, conv.attrs.kernel, conv.attrs.pad, conv.attrs.stride) == (4, 3, 1, 1)
    onnx_matches_reference(m)


def test_hyperparameter_arithmetic_and_conditionals():
    m = almc.load("""
model M(width = 6, deep = true) {
    input x: f32[N, 10]
    h = dense(x, width * 2 + 1)           # 13
    k = dense(h, width // 4)              # 1
    q = dense(h, 7 % 4 + 2 ** 2)          # 7
    r = dense(h, int(width / 4 * 10))     # 15
    s = dense(h, 3 if deep and not (width < 5) else 4)
    t = dense(h, max(2, min(9, 5)) - -1)  # 6
    output a = k
    output b = q
    output c = r
    output d = s
    output e = t
}""")
    assert [m.outputs[k].dims[1] for k in "abcde"] == [1, 7, 15, 3, 6]
    assert almc.load(m.graph.sources["<string>"], width=20, deep=False).outputs["d"].dims[1] == 4


def test_model_parameters_can_be_overridden_and_unknown_ones_are_refused():
    src = "model M(c = 3) { input x: f32[N, 4]\n output y = dense(x, c) }"
    assert almc.load(src, c=5).outputs["y"].dims == ("N", 5)
    assert errors_of(src, k=1) == [(1, 7, "model M has no parameter 'k'")]


def test_blocks_with_defaults_keywords_and_several_return_values():
    m = almc.load("""
block pair(x, c, scale = 2) {
    a = dense(x, c)
    b = dense(x, c * scale)
    return a, b
}
model M {
    input x: f32[N, 4]
    p, q = pair(x, 3)
    r, s = pair(x, c = 1, scale = 5)
    output o1 = q
    output o2 = s
}""")
    assert m.outputs["o1"].dims == ("N", 6) and m.outputs["o2"].dims == ("N", 5)
    names = [n.id for n in m.graph.nodes()]
    assert "p" not in names  # a tuple-valued call has its own prefix, not the first target's name
    assert any(n.startswith("p.pair/") for n in names)


def test_block_result_is_named_after_the_binding_and_inner_values_are_scoped():
    m = almc.load("""
block basic(x, channels) {
    y = conv(x, channels, 3, pad = 1) |> relu
    return relu(y + x)
}
model M {
    input x: f32[N, 4, 6, 6]
    b1 = basic(x, 4)
    b2 = basic(b1, 4)
    output o = b2
}""")
    ids = [n.id for n in m.graph.nodes()]
    assert ids == ["x", "b1/y.conv", "b1/y", "b1.add", "b1", "b2/y.conv", "b2/y", "b2.add", "b2"]
    assert m.graph.node("b2/y").scope == ("basic",)
    assert [r.name for r in m.summary().rows] == ["b1/y", "b1", "b2/y", "b2"]
    onnx_matches_reference(m)


def test_for_loop_carries_updated_names_and_collects_lists():
    m = almc.load("""
model M {
    input x: f32[N, 1, 32, 32]
    skips = []
    for c in [4, 8, 16] {
        x = conv(x, c, 3, pad = 1) |> relu
        skips = skips + [x]
        x = maxpool(x, 2)
    }
    output last = x
    output first = skips[0]
    output n = dense(flatten(skips[-1]), len(skips))
}""")
    assert str(m.outputs["last"]) == "f32[N, 16, 4, 4]"
    assert str(m.outputs["first"]) == "f32[N, 4, 32, 32]"
    assert m.outputs["n"].dims == ("N", 3)
    assert [n.attrs.channels for n in m.graph.nodes() if n.op == "conv"] == [4, 8, 16]
    onnx_matches_reference(m)


def test_range_loops_and_loop_local_names():
    m = almc.load("""
model M(depth = 3) {
    input x: f32[N, 8]
    for i in range(depth) {
        h = dense(x, 8) |> relu      # h is local to each iteration
        x = x + h
    }
    output y = x
}""")
    assert sum(1 for n in m.graph.nodes() if n.op == "dense") == 3
    assert {n.id for n in m.graph.nodes() if n.op == "dense"} == {"i0/h.dense", "i1/h.dense", "i2/h.dense"}
    onnx_matches_reference(m)


def test_shape_queries_choose_layers_at_compile_time():
    m = almc.load("""
block shortcut(x, c, stride) {
    return x if stride == 1 and x.channels == c else conv(x, c, 1, stride = stride) |> batchnorm
}
model M {
    input x: f32[N, 8, 8, 8]
    a = shortcut(x, 8, 1)
    b = shortcut(x, 16, 2)
    output o = b
    output s = dense(flatten(a), x.shape[2] * x.rank)
}""")
    assert str(m.outputs["o"]) == "f32[N, 16, 4, 4]"
    assert m.outputs["s"].dims == ("N", 32)
    assert sum(1 for n in m.graph.nodes() if n.op == "conv") == 1


def test_names_may_be_used_before_their_definition():
    m = almc.load("""
model M {
    output y = dense(h, 2)
    h = relu(g)
    g = dense(x, 3)
    input x: f32[N, 5]
}""")
    assert ops_of(m) == ["dense", "relu", "dense"]


def test_tensor_arithmetic_with_scalars_and_broadcasting():
    m = almc.load("""
model M {
    input x: f32[N, 3, 4]
    input b: f32[4]
    output y = (x * 0.5 + b) / 2 - x
    output z = -x
}""")
    g = m.graph
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    b = np.arange(4, dtype=np.float32)
    out = m.run({"x": x, "b": b})
    np.testing.assert_allclose(out["y"], (x * 0.5 + b) / 2 - x, rtol=1e-6)
    np.testing.assert_allclose(out["z"], -x)
    assert "constant" in [n.op for n in g.nodes()]


def test_symbolic_dimensions_pass_through_and_concat_adds_channels():
    m = almc.load("""
model M {
    input a: f32[B, 3, 5, 5]
    input b: f32[B, 2, 5, 5]
    output y = concat(a, b, a)
    output z = concat([a, b], axis = 1)
}""")
    assert str(m.outputs["y"]) == "f32[B, 8, 5, 5]"
    assert str(m.outputs["z"]) == "f32[B, 5, 5, 5]"


def test_imports_relative_and_standard_library(write):
    write("lib/blocks.alm", """
import "more.alm"
block twice(x, c) { return dense(x, c) |> once(c) }
""")
    write("lib/more.alm", "block once(x, c) { return dense(x, c) |> relu }")
    main = write("main.alm", """
import "lib/blocks.alm"
model M {
    input x: f32[N, 4]
    output y = twice(x, 3)
}""")
    m = almc.load(main)
    assert ops_of(m) == ["dense", "dense", "relu"]
    d = str(main.parent)
    assert set(m.graph.sources) == {str(main), f"{d}/lib/blocks.alm", f"{d}/lib/more.alm"}


def test_comments_and_free_layout():
    m = almc.load("# a comment\nmodel M { input x: f32[N, 2] # trailing\n output y =\n   x |> relu }  # end")
    assert ops_of(m) == ["relu"]


def test_underscored_and_scientific_numbers():
    m = almc.load("model M { input x: f32[N, 1_000]\n output y = leaky_relu(x, alpha = 2.5e-1) }")
    assert m.inputs["x"].dims == ("N", 1000)
    assert m.graph.node("y").attrs.alpha == 0.25


def test_unused_values_are_warnings_not_errors():
    m = almc.load("model M {\n input x: f32[N, 2]\n u = relu(x)\n output y = x |> sigmoid }")
    assert [(w.span.line, w.message) for w in m.warnings] == [(3, "value 'u' is never used by an output")]
    assert "u" not in [n.name for n in m.compile().graph.node]


def test_dropout_vanishes_at_inference():
    m = almc.load("model M { input x: f32[N, 4]\n output y = dense(x, 3) |> dropout(0.5) }")
    proto = m.compile()
    assert [n.op_type for n in proto.graph.node] == ["Gemm"] and proto.graph.node[0].output[0] == "y"
    onnx_matches_reference(m)


@pytest.mark.parametrize("src,shape", [
    ("conv(x, 4, 3, pad = \"same\", stride = 2)", "f32[N, 4, 5, 5]"),
    ("conv(x, 4, 3, pad = ((0, 1), (2, 0)))", "f32[N, 4, 8, 9]"),
    ("conv(x, 4, (3, 1), dilation = 2)", "f32[N, 4, 5, 9]"),
    ("conv(x, 6, 3, groups = 3)", "f32[N, 6, 7, 7]"),
    ("maxpool(x, 3, stride = 2, ceil = true)", "f32[N, 3, 4, 4]"),
    ("avgpool(x, 2)", "f32[N, 3, 4, 4]"),
    ("global_avgpool(x)", "f32[N, 3, 1, 1]"),
    ("adaptive_maxpool(x, (4, 2))", "f32[N, 3, 4, 2]"),
    ("upsample(x, 2)", "f32[N, 3, 18, 18]"),
    ("conv_transpose(x, 2, 2, stride = 2)", "f32[N, 2, 18, 18]"),
    ("center_crop(x, 5)", "f32[N, 3, 5, 5]"),
    ("reshape(x, (27, -1))", "f32[N, 27, 9]"),
    ("softmax(flatten(x))", "f32[N, 243]"),
])
def test_shape_inference_examples(src, shape):
    m = almc.load(f"model M {{ input x: f32[N, 3, 9, 9]\n output y = {src} }}")
    assert str(m.outputs["y"]) == shape
    onnx_matches_reference(m)


def test_updates_get_rows_of_their_own():
    m = almc.load("""
model M {
    input image: f32[N, 1, 8, 8]
    x = conv(image, 4, 3, pad = 1) |> relu
    x = maxpool(x, 2)
    output y = dense(flatten(x), 2)
}""")
    rows = [(r.name, r.ops, r.shape) for r in m.summary().rows]
    assert rows == [("x", "conv→relu", "f32[N, 4, 8, 8]"), ("x_2", "maxpool", "f32[N, 4, 4, 4]"),
                    ("y", "flatten→dense", "f32[N, 2]")]


def test_loop_iterations_with_equal_values_are_kept_apart():
    m = almc.load("model M {\n input x: f32[N, 8]\n h = x\n for u in [16, 16] { h = dense(h, u) |> relu }\n output y = h\n}")
    assert [(r.name, r.params) for r in m.summary().rows] == [("u0/h", 144), ("u1/h", 272)]


def test_assigning_an_outer_name_in_a_loop_updates_it_even_without_reading_it():
    m = almc.load("""
model M {
    input image: f32[N, 1, 8, 8]
    x = image
    for i in range(2) {
        y = relu(x)
        x = maxpool(y, 2)
    }
    output out = x
}""")
    assert str(m.outputs["out"]) == "f32[N, 1, 2, 2]"
    assert not m.warnings


def test_assert_checks_parameters_at_compile_time():
    src = 'model M(size = 188) {\n assert size % 16 == 12, "needs 188 + 16k"\n input x: f32[N, size]\n output y = relu(x)\n}'
    assert almc.load(src).inputs["x"].dims == ("N", 188)
    assert errors_of(src, size=190) == [(2, 9, "needs 188 + 16k")]

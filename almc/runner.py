"""The one step runner: what `almc train`, `Model.train()` and bench/ all run a training step with.

Parameters and optimiser state live in onnxruntime as device-resident OrtValues and are bound to
the step with IOBinding, inputs and `next.*` outputs alike: each step writes the next values into
the same buffers, with no copy to the host and no second copy on the device (the step orders
every update behind the reads of what it overwrites: step._unordered_reads). Only the batch and
the step's random inputs (dropout's masks, drawn from the seed and the step, so that a resumed
run draws the same) go in; the loss and the other outputs come out as OrtValues.
"""
from __future__ import annotations

import time

import numpy as np


def device_value(array: np.ndarray, device: str):
    """An OrtValue on `device` that owns its memory, holding a float32 copy of `array` (one made
    with ortvalue_from_numpy on the CPU would share the array's memory: writing a step's update
    into it would change the caller's array)."""
    import onnxruntime as ort

    array = np.ascontiguousarray(array, np.float32)
    value = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, np.float32, device, 0)
    value.update_inplace(array)
    return value


def bind_state(binding, values: dict, inplace: dict, outputs: list[str], device: str) -> None:
    """Bind the parameters and optimiser state (`values`, by input name) as the step's inputs,
    each output in `inplace` to the OrtValue given there (next.X to X's own: the step writes it in
    place), and the other outputs to fresh buffers on `device`."""
    for k, v in values.items():
        binding.bind_ortvalue_input(k, v)
    for name in outputs:
        if name in inplace:
            binding.bind_ortvalue_output(name, inplace[name])
        else:
            binding.bind_output(name, device)


class StepRunner:
    """A compiled step (compiler.CompiledStep) in a session, holding the weights and state.

    `run(feeds, epoch, step)` binds the batch's arrays, the schedule's `epoch` (fractional, after
    this step) and `step` (0, 1, ...), the random inputs and the state, runs the step in place and
    returns its outputs by name; `run_s` is the time of the run alone."""

    def __init__(self, sess, compiled, weights: dict, state: dict, device: str, seed: int = 0):
        self.sess, self.device, self.seed = sess, device, seed
        self.signature = compiled.signature
        inputs = {i.name for i in sess.get_inputs()}
        self.inputs = inputs
        self.outputs = [o.name for o in sess.get_outputs()]
        self.values = {k: device_value(v, device) for k, v in {**weights, **state}.items() if k in inputs}
        self.inplace = {out: self.values[name] for name, out in self.signature.updates.items()}
        self.frozen = {k: v for k, v in weights.items() if k not in self.values}
        self.names = list(weights)
        self.randoms = [(name, form, compiled.graph.node(name).type.dims)
                        for name, form in self.signature.mode.random_inputs.items()]
        self.binding = sess.io_binding()
        self.run_s = 0.0

    def run(self, feeds: dict, epoch: float, step: int) -> dict:
        b = self.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        for name, array in feeds.items():
            b.bind_cpu_input(name, np.ascontiguousarray(array))
        if "epoch" in self.inputs:
            b.bind_cpu_input("epoch", np.array(epoch, np.float32))
        if "step" in self.inputs:
            b.bind_cpu_input("step", np.array(step, np.float32))
        batch = len(next(iter(feeds.values())))
        for k, (name, form, dims) in enumerate(self.randoms):  # from (seed, step): resumable
            draw = form.draw(np.random.default_rng([self.seed, step, k + 1]), (batch, *dims[1:]))
            b.bind_cpu_input(name, draw.astype(np.float32))
        bind_state(b, self.values, self.inplace, self.outputs, self.device)
        t = time.perf_counter()
        self.sess.run_with_iobinding(b)
        self.run_s = time.perf_counter() - t
        return dict(zip(self.outputs, b.get_outputs()))

    def weights(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer now, as arrays that outlive the OrtValues."""
        out = dict(self.frozen)
        for k in self.names:
            if k in self.values:
                out[k] = np.array(self.values[k].numpy())
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The optimiser state now."""
        return {k: self.values[k].numpy() for k in self.signature.state if k in self.values}

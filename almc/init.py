"""Parameter initialisation: per op, per following activation, reproducible from a seed.

`auto` resolves to He normal (std = sqrt(2 / fan_in)) when the layer's output
feeds a ReLU-like activation (looking through batchnorm and dropout), and to
Glorot uniform (limit = sqrt(6 / (fan_in + fan_out))) otherwise, as the course
recommends for tanh / sigmoid / linear outputs. Biases start at zero, batch norm
at scale 1 / shift 0 / mean 0 / variance 1.

Each parameter draws from its own generator seeded by (seed, crc32(name)), so a
parameter's initial value does not depend on the order or presence of others, and
the draws can run on several threads (numpy releases the GIL while it fills an
array). Normal values come from uniform ones by the Box-Muller transform, in
vectorised float32: numpy's own float32 normal sampler is not vectorised, so it is slower
a value, and ResNet-50 draws 25.5M values (figures: docs/performance.md).
"""
from __future__ import annotations

import os
import zlib

import numpy as np

from .graph import Graph, param_specs
from .ops.attrs import INIT_CONSTANT, parse_init
from .ops.registry import Param, lookup


def init_by_activation(graph: Graph, nid: str) -> str:
    """What "auto" is for a node's parameters: the `init_before` of the activations its output
    flows into, looking through transparent ops; He wins over Glorot; Glorot with none."""
    seen = set()
    frontier = [nid]
    found = None
    while frontier:
        cur = frontier.pop()
        for c in graph.consumers(cur):
            if c.id in seen:
                continue
            seen.add(c.id)
            op = lookup(c.op)
            if op.init_before:
                if op.init_before == "he":
                    return "he"
                found = found or op.init_before
            elif op.transparent:
                frontier.append(c.id)
    return found or "glorot"


def resolve_init(graph: Graph, nid: str, p: Param) -> str:
    if p.init != "auto":
        return p.init
    return init_by_activation(graph, nid)


def draw(init: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    kind, args = parse_init(init)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == INIT_CONSTANT:
        return np.full(shape, args[0], np.float32)
    if kind in ("he", "normal", "glorot_normal"):
        std = {"he": np.sqrt(2.0 / fan_in), "normal": args[0] if args else 0.01,
               "glorot_normal": np.sqrt(2.0 / (fan_in + fan_out))}[kind]
        return normal(rng, shape, std)
    if kind == "trunc_normal":  # N(0, std^2) with every value beyond 2 std drawn again
        out = normal(rng, shape, args[0]).reshape(-1)
        for _ in range(64):  # each round redraws 4.6% of what is left: 64 rounds leave nothing in practice
            bad = np.flatnonzero(np.abs(out) > 2 * args[0])
            if not bad.size:
                break
            out[bad] = normal(rng, (bad.size,), args[0])
        return np.clip(out, -2 * args[0], 2 * args[0]).reshape(shape)
    if kind == "uniform":
        low, high = args
        return (rng.random(shape, dtype=np.float32) * np.float32(high - low) + np.float32(low)).astype(np.float32)
    if kind in ("glorot", "uniform_fan_in", "he_uniform"):
        # U(-lim, lim). uniform_fan_in: PyTorch's default for Linear / Conv / RNN; he_uniform: kaiming_uniform_(a = 0)
        lim = np.float32({"glorot": np.sqrt(6.0 / (fan_in + fan_out)), "uniform_fan_in": 1.0 / np.sqrt(fan_in),
                          "he_uniform": np.sqrt(6.0 / fan_in)}[kind])
        a = rng.random(shape, dtype=np.float32)
        a *= np.float32(2)
        a -= np.float32(1)
        a *= lim
        return a
    raise AssertionError(f"initialiser {init} is parsed but not drawn")


def normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """N(0, std^2) in float32 by Box-Muller: r = sqrt(-2 ln u1), values r cos(2 pi u2) and r sin(2 pi u2).
    u1 = 1 - uniform lies in (0, 1], so the log is finite; the float32 uniforms (24 bits) cap |value| at
    5.77 std, a tail of probability 8e-9."""
    n = int(np.prod(shape))
    half = (n + 1) // 2
    u = rng.random(2 * half, dtype=np.float32)
    radius, angle = u[:half], u[half:]
    np.subtract(np.float32(1), radius, out=radius)
    np.log(radius, out=radius)
    radius *= np.float32(-2 * std * std)
    np.sqrt(radius, out=radius)
    angle *= np.float32(2 * np.pi)
    out = np.empty(2 * half, np.float32)
    np.cos(angle, out=out[:half])
    np.sin(angle, out=out[half:])
    out[:half] *= radius
    out[half:] *= radius
    return out[:n].reshape(shape)


def initialize(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    return draw_all([(name, resolve_init(graph, nid, p), p.shape, p.fan_in, p.fan_out)
                     for nid, name, p in param_specs(graph)], seed)


def available_memory() -> int | None:
    """Bytes this machine can still give a process without swapping (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def draw_all(specs: list[tuple[str, str, tuple, int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """{name: array} for (name, init, shape, fan_in, fan_out) specs, each from its own generator.
    Refuses (MemoryError, before allocating) weights larger than the memory available: the
    allocation itself would succeed under overcommit, and drawing into it would end in the
    kernel's OOM killer, with no message at all."""
    need = 4 * sum(int(np.prod(spec[2], dtype=object)) for spec in specs)
    free = available_memory()
    if free is not None and need > free:
        raise MemoryError(f"the parameters take {need:,} bytes as float32, and this machine has {free:,} available")
    def one(spec):
        name, init, shape, fan_in, fan_out = spec
        return draw(init, shape, fan_in, fan_out, np.random.default_rng([seed, zlib.crc32(name.encode())]))

    if need < 4 << 20:  # small models: threads cost more than they save
        return {spec[0]: one(spec) for spec in specs}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return dict(zip((spec[0] for spec in specs), pool.map(one, specs)))

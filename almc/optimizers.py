"""The optimisers, one record each: the settings a training section may give (with their
defaults), the state it keeps per parameter, and its update rule as graph code. The training
step (step.py) calls `update` for every trainable parameter; `optimizer sgd(lr = 0.1)` in a
training section is checked against `defaults`. Each update is PyTorch's, to the formula
(tests/test_train_parity.py compares them step by step)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Optimizer:
    name: str
    defaults: dict  # every setting, with its default; lr is the base of the schedule
    update: Callable  # (u: Update, w, g, lr) -> the parameter's next value; u.state(...) for its state


@dataclass
class Update:
    """What an update rule builds with: the step's Diff (`d.op`, `d.const`), the settings, the
    `step` input (for Adam's bias correction) and `state(prefix)`, a state input per parameter
    whose next value the rule returns through `next`."""

    d: object
    o: dict
    step: str
    state: Callable  # prefix -> the input node of state prefix.P
    next: Callable  # (state input, value) -> None

    def mul(self, a, b):
        return self.d.op("mul", [a, b])

    def add(self, a, b):
        return self.d.op("add", [a, b])

    def sub(self, a, b):
        return self.d.op("sub", [a, b])

    def c(self, value):
        return self.d.const(value)


def sgd(u: Update, w, gr, lr):
    o = u.o
    if o["weight_decay"]:
        gr = u.add(gr, u.mul(w, u.c(o["weight_decay"])))
    direction = gr
    if o["momentum"]:
        v = u.state("momentum")
        v_new = u.add(u.mul(v, u.c(o["momentum"])), gr)  # PyTorch's buffer: v = momentum v + g
        u.next(v, v_new)
        direction = u.add(gr, u.mul(v_new, u.c(o["momentum"]))) if o["nesterov"] else v_new
    return u.sub(w, u.mul(direction, lr))


def _adam(decoupled: bool):
    def update(u: Update, w, gr, lr):
        o, d = u.o, u.d
        if not decoupled and o["weight_decay"]:
            gr = u.add(gr, u.mul(w, u.c(o["weight_decay"])))  # Adam's L2 penalty goes through the moments
        m = u.state("adam_m")
        v = u.state("adam_v")
        b1, b2 = o["beta1"], o["beta2"]
        m_new = u.add(u.mul(m, u.c(b1)), u.mul(gr, u.c(1 - b1)))
        v_new = u.add(u.mul(v, u.c(b2)), u.mul(u.mul(gr, gr), u.c(1 - b2)))
        u.next(m, m_new)
        u.next(v, v_new)
        m_hat = d.op("div", [m_new, d.op("bias_correction", [u.step], {"beta": b1})])
        v_hat = d.op("div", [v_new, d.op("bias_correction", [u.step], {"beta": b2})])
        direction = d.op("div", [m_hat, u.add(d.op("sqrt", [v_hat]), u.c(o["eps"]))])
        if decoupled and o["weight_decay"]:
            direction = u.add(direction, u.mul(w, u.c(o["weight_decay"])))  # decoupled weight decay
        return u.sub(w, u.mul(direction, lr))
    return update


OPTIMIZERS = {o.name: o for o in (
    Optimizer("sgd", {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, sgd),
    Optimizer("adam", {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}, _adam(False)),
    Optimizer("adamw", {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}, _adam(True)),
)}

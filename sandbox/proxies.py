"""Zero-cost proxies: scores of an untrained network that hint at how well it will train.

The runner computes them in the smoke stage for every candidate that passes its contract checks, on a
freshly built network (at initialisation) and the proxy batch; agentarch.search.predictor learns from them
which candidates are worth training. Three proxies, each a float, each optional:

- `synflow` (Tanaka et al., 2020): the natural log of sum |θ ⊙ ∂R/∂θ|, where R is the sum of the
  network's outputs for an all-ones input with every parameter replaced by its absolute value, in
  eval mode (batch norm at initialisation is then an affine map, as in the synflow code) and double
  precision. Data-free. An id input (token, lm, id-sequence tasks) is the literal all-ones tensor,
  the constant id 1 at every position, whose embedding under absolute weights is a positive vector.
  The sum runs over every parameter (Abdelfattah et al. sum convolution and linear weights only). The
  log keeps the score (routinely 1e30 and more) in a range any float and the event line hold;
- `grad_norm`: the L2 norm of the gradient of the training loss over all parameters, on the proxy
  batch of real training data, in train mode (Abdelfattah et al. sum per-layer norms instead);
- `naswot` (Mellor et al., 2021): the log-determinant of K over the proxy batch, where
  K[i, j] counts the units of ReLU-like activations on which examples i and j agree about the
  sign of the unit's input (both positive or both not), in train mode. ReLU-like means ReLU, ReLU6,
  leaky ReLU and the smooth relatives that are "on" for positive inputs (GELU, SiLU, ELU, SELU,
  CELU, Mish, hardswish), caught as torch operators, so functional calls count as well as modules.
  Only activations whose first dimension is the batch count. A network with none has no naswot
  score (the proxy is absent, not zero), nor has one whose K is singular (see SINGULAR).

A proxy that raises, runs past its share of the time budget, or gives a non-finite value or one
beyond MAX_VALUE is left out; it never fails the candidate. The host refuses an event with a value
it cannot use (agentarch/isolation/protocol.py), so the bounds here are the host's.

Like the runner, this imports only torch and the standard library.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

NAMES = ("synflow", "grad_norm", "naswot")
"""Every proxy, in the order they are computed; the host accepts these names and no other."""

MAX_VALUE = 1e30
"""The largest magnitude the host accepts (agentarch.isolation.protocol.MAX_PROXY_VALUE); beyond it a proxy is left out."""

SINGULAR = 1e-9
"""A Cholesky pivot of K below this share of K's largest entry makes K singular: two examples (or a mix of
them) the activations cannot tell apart, so log det K is -inf and naswot is left out. K is a sum of
0/1 agreement counts, and on a singular one the decision the float factorisation makes on its own (a
sign or a pivot of about 1e-16 relative) is a rounding error that differs between CPUs; this margin,
far above rounding, gives one verdict on every machine."""

_CHUNK = 1 << 20
"""Units of one activation turned into a float matrix at a time for naswot's kernel: exact sums, bounded memory."""


class ProxyTimeout(Exception):
    """The proxies' time budget ran out while one was being computed."""


# -- synflow ----------------------------------------------------------------------------------


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    """ln of the synflow score of `model` for inputs shaped like `x` (one all-ones example).

    The model is left as it was found: its parameters and buffers get back their own tensors (never
    modified), the gradients are cleared, and each module's train/eval mode is restored.
    """
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(module, name, buf) for module in model.modules() for name, buf in module._buffers.items()]
    modes = [(module, module.training) for module in model.modules()]
    try:
        for p, data in params:
            if data.is_floating_point():
                p.data = data.double().abs()
        for module, name, buf in buffers:
            if buf is not None and buf.is_floating_point():
                module._buffers[name] = buf.double()
        model.eval()
        model.zero_grad(set_to_none=True)
        ones = torch.ones((1, *x.shape[1:]), dtype=x.dtype if not x.is_floating_point() else torch.float64)
        model(ones.to(x.device)).double().sum().backward()
        score = sum(float((p.detach() * p.grad).abs().sum()) for p, _ in params if p.grad is not None)
    finally:
        model.zero_grad(set_to_none=True)
        for p, data in params:
            p.data = data
        for module, name, buf in buffers:
            module._buffers[name] = buf
        for module, training in modes:
            module.training = training
    return math.log(score) if score > 0 else math.nan


# -- grad_norm --------------------------------------------------------------------------------


def grad_norm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> float:
    """The L2 norm of the training loss's gradient over every parameter, for one batch in train mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss(model(x), y).backward()
        squares = [p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None]
        return float(torch.stack(squares).sum().sqrt()) if squares else math.nan
    finally:
        model.zero_grad(set_to_none=True)


# -- naswot -----------------------------------------------------------------------------------

_OPS = torch.ops.aten
_RELU_LIKE = frozenset(
    {
        _OPS.relu.default,
        _OPS.relu_.default,
        _OPS.leaky_relu.default,
        _OPS.leaky_relu_.default,
        _OPS.gelu.default,
        _OPS.gelu_.default,
        _OPS.silu.default,
        _OPS.silu_.default,
        _OPS.elu.default,
        _OPS.elu_.default,
        _OPS.selu.default,
        _OPS.selu_.default,
        _OPS.celu.default,
        _OPS.celu_.default,
        _OPS.mish.default,
        _OPS.mish_.default,
        _OPS.hardswish.default,
        _OPS.hardswish_.default,
    }
)
_HARDTANH = frozenset({_OPS.hardtanh.default, _OPS.hardtanh_.default})  # ReLU6 is hardtanh(x, 0, 6)


class _ActivationCodes(TorchDispatchMode):
    """Adds, for every ReLU-like operator a forward pass runs, the agreement of its input signs to `kernel`."""

    def __init__(self, batch: int, device: torch.device) -> None:
        super().__init__()
        self.batch = batch
        self.kernel = torch.zeros((batch, batch), dtype=torch.float64, device=device)
        self.units = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # nothing is compiled here; see runner.FlopCount
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        relu6 = func in _HARDTANH and len(args) > 1 and args[1] == 0
        source = args[0] if args else None
        if (func in _RELU_LIKE or relu6) and isinstance(source, torch.Tensor) and source.ndim >= 1:
            if source.shape[0] == self.batch:
                self._add((source > 0).reshape(self.batch, -1))
        return func(*args, **kwargs)

    def _add(self, codes: torch.Tensor) -> None:
        """K[i, j] += units on in both + units off in both = n - on_i - on_j + 2 (on_i . on_j), one product."""
        for start in range(0, codes.shape[1], _CHUNK):
            on = codes[:, start : start + _CHUNK].float()
            both = (on @ on.T).double()
            count = on.sum(dim=1, dtype=torch.float64)
            self.kernel += on.shape[1] - count[:, None] - count[None, :] + 2 * both
        self.units += codes.shape[1]


def naswot(model: nn.Module, x: torch.Tensor) -> float | None:
    """log det K of the batch `x` (see the module docstring); None when the network has no ReLU-like activation."""
    model.train()
    codes = _ActivationCodes(len(x), x.device)
    with torch.no_grad(), codes:
        model(x)
    if codes.units == 0:
        return None
    kernel = codes.kernel
    factor, info = torch.linalg.cholesky_ex(kernel)
    pivots = torch.diagonal(factor) ** 2
    if int(info) != 0 or float(pivots.min()) <= SINGULAR * float(kernel.diagonal().max()):
        return math.nan
    return float(torch.log(pivots).sum())


# -- all of them, bounded ---------------------------------------------------------------------


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ProxyTimeout in the main thread once `seconds` have passed (between Python bytecodes, so a
    single long operator still finishes); elsewhere than the main thread, no timer is set."""

    def expire(signum: int, frame: Any) -> None:
        raise ProxyTimeout(f"past the proxies' budget of {seconds:.1f} s")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def usable(value: float | None) -> bool:
    """Whether a proxy's value is one the host accepts: a finite float within ±MAX_VALUE."""
    return value is not None and math.isfinite(value) and abs(value) <= MAX_VALUE


def compute(
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    budget_s: float,
    seed: int,
) -> tuple[dict[str, float], float]:
    """Every proxy that succeeds within `budget_s` seconds, and the seconds they took.

    `build` makes the network at initialisation (once, here: synflow restores what it changes, and the
    train-mode proxies read no running statistics); each proxy starts from `seed`, so the values are
    the same on every run. A failure of any kind leaves that proxy out, and none starts once the
    budget is spent.
    """
    started = time.perf_counter()
    scores: dict[str, float] = {}
    try:
        with _deadline(budget_s):
            model = build().to(x.device)
            steps: tuple[tuple[str, Callable[[], float | None]], ...] = (
                ("synflow", lambda: synflow(model, x)),
                ("grad_norm", lambda: grad_norm(model, x, y, loss)),
                ("naswot", lambda: naswot(model, x)),
            )
            for name, step in steps:
                torch.manual_seed(seed)
                try:
                    value = step()
                except ProxyTimeout:
                    raise
                except Exception:  # noqa: BLE001 - a proxy that fails is left out, never the candidate
                    continue
                if usable(value):
                    scores[name] = float(value)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the budget ran out, or building the network failed: keep what is done
        pass
    return scores, time.perf_counter() - started

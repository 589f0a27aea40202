"""Sizes that may depend on the batch size: integers and monomials in B, and how they combine.

A dimension, or an element of a shape tensor, is an `int` or a `Sym`, `coef * B ** power` with B the batch size.
shapes.py computes every tensor's shape with them; what cannot stay a monomial (B + 1, B / 3 when B is not a
multiple of 3) raises `Unfollowable`, and the analyses that need the size refuse the graph. A shape tensor's value
is a numpy object array of sizes while an element depends on B (`as_object`, `tidy`). Also here: numpy's
broadcasting, ONNX's sliding-window sizes and einsum's letters, all on such sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class Unfollowable(Exception):
    """A node this module cannot follow; the message names it and says why."""


BROKEN = (ValueError, IndexError, TypeError, KeyError, AttributeError, ZeroDivisionError, OverflowError, RuntimeError)
"""What a rule meets on a malformed graph (a wrong arity, an axis out of range): the node cannot be followed."""


@dataclass(frozen=True)
class Sym:
    """`coef * B ** power` for the batch size B (power >= 1): a dimension or a shape value that depends on it."""

    coef: int
    power: int = 1

    def at(self, batch: int) -> int:
        return self.coef * batch**self.power

    def __repr__(self) -> str:
        head = "B" if self.coef == 1 else f"{self.coef}*B"
        return head + (f"^{self.power}" if self.power > 1 else "")


Size = int | Sym
"""A dimension or a shape element: an integer, or a monomial in the batch size."""
B = Sym(1)


def _split(x: Any) -> tuple[int, int]:
    if isinstance(x, Sym):
        return x.coef, x.power
    if isinstance(x, (int, np.integer)):
        return int(x), 0
    raise Unfollowable(f"{x!r} is not an integer")


MAX_SIZE = 2**63 - 1
"""The largest size or shape element followed: int64's, ONNX's type for shapes, so no real tensor is larger. Python's
integers have no bound, and a chain of N nodes that square a shape value (Mul(v, v)) made one of 2**N bits: 32
nodes held the host 26 s per read, 40 would take hours and 128 GiB (tests/security/test_redteam_round5.py)."""
MAX_POWER = 16
"""The highest power of the batch size followed (B * B is an attention matrix's; no real shape has B**16)."""


def _make(coef: int, power: int) -> Size:
    if abs(coef) > MAX_SIZE or power > MAX_POWER:
        raise Unfollowable(
            f"a size of {'B**' + str(power) if power > MAX_POWER else 'over 2**63'} is beyond any tensor"
        )
    return coef if power == 0 or coef == 0 else Sym(coef, power)


def mul(a: Any, b: Any) -> Size:
    (ca, pa), (cb, pb) = _split(a), _split(b)
    return _make(ca * cb, pa + pb)


def div(a: Any, b: Any) -> Size:
    """a / b as ONNX divides integers (truncating); with B only when the division is exact."""
    (ca, pa), (cb, pb) = _split(a), _split(b)
    if cb == 0:
        raise Unfollowable("division by zero")
    if pa == pb == 0:
        return (
            int(ca / cb) if abs(ca) < 2**52 and abs(cb) < 2**52 else (abs(ca) // abs(cb)) * (1 if ca * cb >= 0 else -1)
        )
    if pa >= pb and ca % cb == 0:
        return _make(ca // cb, pa - pb)
    raise Unfollowable(f"{a!r} / {b!r} is not a monomial in the batch size")


def add(a: Any, b: Any) -> Size:
    (ca, pa), (cb, pb) = _split(a), _split(b)
    if pa == pb or cb == 0 or ca == 0:
        return _make(ca + cb, max(pa, pb) if ca and cb else (pa if ca else pb))
    raise Unfollowable(f"{a!r} + {b!r} is not a monomial in the batch size")


def sub(a: Any, b: Any) -> Size:
    cb, pb = _split(b)
    return add(a, _make(-cb, pb))


def product(sizes: Any) -> Size:
    total: Size = 1
    for size in sizes:
        total = mul(total, size)
    return total


def evaluate(size: Size, batch: int) -> int:
    return size.at(batch) if isinstance(size, Sym) else int(size)


def broadcast(*shapes: tuple[Size, ...]) -> tuple[Size, ...]:
    """Numpy broadcasting: aligned on the right, a 1 stretches, any other sizes must agree."""
    rank = max(len(s) for s in shapes)
    out: list[Size] = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise Unfollowable(f"sizes {sorted(map(repr, sizes))} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def normalize(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unfollowable(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def window(size: Size, kernel: int, stride: int, pad: tuple[int, int], dilation: int, auto_pad: str, ceil: bool) -> int:
    if isinstance(size, Sym):
        raise Unfollowable("a sliding window runs along the batch axis")
    span = dilation * (kernel - 1) + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // stride)
    if auto_pad == "VALID":
        pad = (0, 0)
    total = size + pad[0] + pad[1] - span
    out = (-(-total // stride) if ceil else total // stride) + 1
    if ceil and (out - 1) * stride >= size + pad[0]:
        out -= 1  # a last window that would start in the right padding is dropped (as torch and ONNX Runtime do)
    if out < 1:
        raise Unfollowable(f"the window ({kernel}, stride {stride}) is larger than the input ({size})")
    return out


def einsum_letters(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's letters and the output's, with '...' spelled out as upper-case letters (numpy's rules)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise Unfollowable(f"the equation {equation!r} has {len(terms)} operands, the node {len(ranks)}")
    widest = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            widest = max(widest, rank - len(term.replace("...", "")))
    fresh = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:widest]
    spelled = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            width = rank - len(term.replace("...", ""))
            term = term.replace("...", fresh[widest - width :])
        if len(term) != rank or not term.isalpha():
            raise Unfollowable(f"the equation {equation!r} does not fit operands of ranks {ranks}")
        spelled.append(term)
    if arrow:
        out = rhs.replace("...", fresh)
    else:
        letters = "".join(spelled)
        out = fresh + "".join(sorted(c for c in set(letters) if c.islower() and letters.count(c) == 1))
    if not out.isalpha() and out:
        raise Unfollowable(f"the equation {equation!r} has an output this module cannot read")
    return spelled, out


def equal(a: Size, b: Size) -> bool:
    """Whether two sizes are equal for every batch size; Unfollowable when that depends on the batch size."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        if a == b:
            return True
        other = b if isinstance(a, Sym) else a
        if isinstance(other, int) and other <= 0:
            return False  # B * c with c > 0 is positive
        raise Unfollowable(f"whether {a!r} equals {b!r} depends on the batch size")
    return a == b


def as_object(value: np.ndarray) -> np.ndarray:
    return value.astype(object) if value.dtype != object else value


def tidy(value: np.ndarray | None) -> np.ndarray | None:
    """An object array back to a numeric one when no element depends on the batch size."""
    if value is None:
        return None
    value = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if value.dtype != object:
        return value
    if any(isinstance(v, Sym) for v in value.ravel()):
        return value
    return np.array(value.tolist()).reshape(value.shape)

"""Contrast expressions over trial types, parsed by the project and never evaluated.

A run-level contrast of the analysis spec is written over trial types, e.g.
``"face - house"`` or ``"(F1 + F2) / 2 - N1"``. nilearn turns such strings into
vectors with :meth:`pandas.DataFrame.eval`, which also runs method calls
(``on.to_csv('/path')`` writes a file), so a shared spec could run code.
This module is a tokenizer and a recursive-descent parser of the only grammar
a contrast needs::

    expression := term (("+" | "-") term)*
    term       := factor (("*" | "/") factor)*
    factor     := ("+" | "-") factor | NUMBER | NAME | "(" expression ")"

``NAME`` is a trial type (a letter or ``_`` followed by letters, digits or
``_``); ``NUMBER`` is a decimal literal (``2``, ``0.5``, ``.5``, ``1e-3``). The
value of every sub-expression is kept as weights over names plus a constant,
so non-linear forms (``a * b``, ``1 / a``) and a constant offset (``a + 1``)
are rejected. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["ContrastExpressionError", "parse_contrast", "MAX_LENGTH", "MAX_DEPTH"]

MAX_LENGTH = 1000
"""Longest accepted expression (characters)."""

MAX_DEPTH = 50
"""Deepest accepted nesting of parentheses and unary signs."""

_TOKEN = re.compile(r"""
    (?P<space>[ \t]+)
  | (?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>[-+*/()])
""", re.VERBOSE)


class ContrastExpressionError(ValueError):
    """An expression outside the grammar, or not linear in the trial types."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


@dataclass
class _Linear:
    """``constant + sum(weights[name] * name)``."""

    constant: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def is_constant(self) -> bool:
        return not any(self.weights.values())

    def scaled(self, factor: float) -> _Linear:
        return _Linear(self.constant * factor, {k: v * factor for k, v in self.weights.items()})

    def plus(self, other: _Linear, sign: float) -> _Linear:
        weights = dict(self.weights)
        for name, w in other.weights.items():
            weights[name] = weights.get(name, 0.0) + sign * w
        return _Linear(self.constant + sign * other.constant, weights)


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise ContrastExpressionError(
                f"character {expression[pos]!r} at position {pos + 1} is not allowed "
                "(only trial-type names, numbers, + - * / and parentheses)")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ContrastExpressionError("expression ends too early")
        self.i += 1
        return token

    def expression(self) -> _Linear:
        value = self.term()
        while (token := self.peek()) is not None and token.text in "+-" and token.kind == "op":
            self.take()
            value = value.plus(self.term(), 1.0 if token.text == "+" else -1.0)
        return value

    def term(self) -> _Linear:
        value = self.factor()
        while (token := self.peek()) is not None and token.kind == "op" and token.text in "*/":
            self.take()
            right = self.factor()
            if token.text == "*":
                if value.is_constant:
                    value = right.scaled(value.constant)
                elif right.is_constant:
                    value = value.scaled(right.constant)
                else:
                    raise ContrastExpressionError(
                        f"product of two trial-type terms at position {token.pos + 1} is not linear")
            else:
                if not right.is_constant:
                    raise ContrastExpressionError(
                        f"division by a trial-type term at position {token.pos + 1} is not linear")
                if right.constant == 0:
                    raise ContrastExpressionError(f"division by zero at position {token.pos + 1}")
                value = value.scaled(1.0 / right.constant)
        return value

    def factor(self) -> _Linear:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ContrastExpressionError(f"nested more than {MAX_DEPTH} levels deep")
        token = self.take()
        if token.kind == "op" and token.text in "+-":
            value = self.factor()
            value = value.scaled(-1.0) if token.text == "-" else value
        elif token.kind == "number":
            number = float(token.text)
            if not math.isfinite(number):
                raise ContrastExpressionError(f"number {token.text[:40]!r} is out of range")
            value = _Linear(number)
        elif token.kind == "name":
            value = _Linear(0.0, {token.text: 1.0})
        elif token.text == "(":
            value = self.expression()
            closing = self.peek()
            if closing is None or closing.text != ")":
                raise ContrastExpressionError(f"parenthesis opened at position {token.pos + 1} is not closed")
            self.take()
        else:
            raise ContrastExpressionError(f"unexpected {token.text!r} at position {token.pos + 1}")
        self.depth -= 1
        return value


def parse_contrast(expression: str) -> dict[str, float]:
    """Weights over trial types of a linear contrast expression.

    Parameters
    ----------
    expression : str
        E.g. ``"face - house"``, ``"(F1 + F2) / 2 - N1"``, ``"2*on - 0.5 * rating"``.

    Returns
    -------
    dict of str -> float
        Trial type -> weight, in order of first appearance; trial types whose
        weights cancel (``a + b - b``) keep weight 0 so callers can still check
        that the run has them.

    Raises
    ------
    ContrastExpressionError
        A character, token or form outside the grammar, a non-linear form,
        a constant term, all weights zero, a non-finite weight, or an
        expression longer than :data:`MAX_LENGTH` characters.
    """
    if not isinstance(expression, str):
        raise ContrastExpressionError(f"must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise ContrastExpressionError(f"is longer than {MAX_LENGTH} characters")
    tokens = _tokenize(expression)
    if not tokens:
        raise ContrastExpressionError("is empty")
    parser = _Parser(tokens)
    value = parser.expression()
    extra = parser.peek()
    if extra is not None:
        raise ContrastExpressionError(f"unexpected {extra.text[:40]!r} at position {extra.pos + 1}")
    weights = value.weights
    if not all(math.isfinite(w) for w in weights.values()) or not math.isfinite(value.constant):
        raise ContrastExpressionError("has a weight that is not a finite number")
    if value.constant != 0:
        raise ContrastExpressionError(
            f"has a constant term ({value.constant:g}); a contrast is a weighted sum of trial types")
    if not any(weights.values()):
        raise ContrastExpressionError("has no non-zero weight on any trial type")
    return weights

"""The signals behind an alert expression: what it compares, without the thresholds.

An alert expression such as ``up{job="w"} == 0`` or ``a > 0.14 and b > 0.14`` is empty while the system is
healthy, so "it returns data" says nothing about it. ``signals`` splits it at its top-level set operators
(``and``, ``or``, ``unless``) and comparisons (``==``, ``!=``, ``>``, ``<``, ``>=``, ``<=``, with or without
``bool``), drops the constant operands (the thresholds) and unwraps ``absent(x)`` to ``x``. Each signal
returned should have data whenever the component it watches is up.

This is a small splitter for the expressions segue writes (no vector matching modifiers on the split
operators), not a PromQL parser.
"""

from __future__ import annotations

import re

_SET_OPS = ("and", "or", "unless")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_CONSTANT = re.compile(r"^[\d.eE+\-*/()\s]+$")
_ABSENT = re.compile(r"^absent(?:_over_time)?\((.*)\)$", re.DOTALL)


def _top_level(expr: str) -> list[tuple[int, str]]:
    """Positions and texts of the set operators and comparisons outside brackets and strings."""
    found: list[tuple[int, str]] = []
    depth = 0
    quote = ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((c for c in _COMPARISONS if expr.startswith(c, i)), None)
            if op is not None and not expr.startswith("=~", i) and not expr.startswith("!~", i):
                found.append((i, op))
                i += len(op)
                continue
            word = (
                re.match(r"[a-z_]+", expr[i:]) if (ch.isalpha() and (i == 0 or not _word_char(expr[i - 1]))) else None
            )
            if word is not None:
                if word.group(0) in _SET_OPS:
                    found.append((i, word.group(0)))
                i += len(word.group(0))
                continue
        i += 1
    return found


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_:"


def _strip_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")") and _closes_at_end(expr):
        expr = expr[1:-1].strip()
    return expr


def _closes_at_end(expr: str) -> bool:
    """True if the opening parenthesis at 0 is closed by the last character."""
    depth = 0
    for i, ch in enumerate(expr):
        depth += 1 if ch == "(" else -1 if ch == ")" else 0
        if depth == 0:
            return i == len(expr) - 1
    return False


def _split(expr: str, ops: tuple[str, ...]) -> list[str] | None:
    cuts = [(pos, op) for pos, op in _top_level(expr) if op in ops]
    if not cuts:
        return None
    parts: list[str] = []
    start = 0
    for pos, op in cuts:
        parts.append(expr[start:pos])
        start = pos + len(op)
    parts.append(expr[start:])
    return [re.sub(r"^\s*bool\b", "", p) for p in parts]


def signals(expr: str) -> list[str]:
    """The non-constant operands of ``expr``'s top-level set operators and comparisons, in order."""
    expr = _strip_parens(expr)
    for ops in (_SET_OPS, _COMPARISONS):
        parts = _split(expr, ops)
        if parts is not None:
            return [s for part in parts for s in signals(part)]
    if _CONSTANT.match(expr):
        return []
    absent = _ABSENT.match(expr)
    if absent is not None:
        return signals(absent.group(1))
    return [expr]

"""Exact arithmetic without eval: the expression is parsed with ``ast`` and a whitelist walked.

Numbers are :class:`fractions.Fraction`, so ``0.1 + 0.2`` is exactly ``0.3`` and ``1/3`` stays
a third. Only square roots of non-squares and fractional powers are inexact; they are
computed with 50-digit decimals and the result says ``exact: false``. Sizes are guarded
before work is done: expression length, nesting depth, exponent size and the bit length of
every intermediate value.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any

from lalo_tools.core import ErrorCode, Limits, ToolFailure, ToolResult

_PRECISION = 50
_DISPLAY_DIGITS = 30
_MAX_DEPTH = 60
_MAX_NODES = 500


@dataclass(frozen=True)
class Value:
    number: Fraction
    exact: bool = True


class _Evaluator:
    def __init__(self, max_bits: int) -> None:
        self.max_bits = max_bits
        self.nodes = 0

    def fail(self, message: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENTS) -> ToolFailure:
        path = "$.expression" if code is ErrorCode.INVALID_ARGUMENTS else ""
        return ToolFailure(code, message, path=path)

    def check_size(self, value: Value) -> Value:
        n = value.number
        if max(n.numerator.bit_length(), n.denominator.bit_length()) > self.max_bits:
            raise self.fail(
                f"a value in the expression exceeds {self.max_bits} bits", ErrorCode.LIMIT_EXCEEDED
            )
        return value

    def eval(self, node: ast.AST, depth: int = 0) -> Value:
        self.nodes += 1
        if depth > _MAX_DEPTH or self.nodes > _MAX_NODES:
            raise self.fail("expression is too deeply nested or too long", ErrorCode.LIMIT_EXCEEDED)
        if isinstance(node, ast.Expression):
            return self.eval(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand, depth + 1)
            if isinstance(node.op, ast.USub):
                return Value(-operand.number, operand.exact)
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self.fail(f"operator {type(node.op).__name__} is not supported")
        if isinstance(node, ast.BinOp):
            left = self.eval(node.left, depth + 1)
            right = self.eval(node.right, depth + 1)
            return self.check_size(self.binary(node.op, left, right))
        if isinstance(node, ast.Call):
            return self.check_size(self.call(node, depth))
        if isinstance(node, ast.Name):
            raise self.fail(f"unknown name {node.id!r}; only numbers and functions {_FUNC_NAMES}")
        raise self.fail(f"{type(node).__name__} is not allowed in an arithmetic expression")

    def constant(self, value: Any) -> Value:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"only numbers are allowed, not {value!r}")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail("number is out of range")
            # repr gives the shortest literal that round-trips, i.e. what was typed.
            return self.check_size(Value(Fraction(Decimal(repr(value)))))
        return self.check_size(Value(Fraction(value)))

    def binary(self, op: ast.operator, left: Value, right: Value) -> Value:
        exact = left.exact and right.exact
        a, b = left.number, right.number
        if isinstance(op, ast.Add):
            return Value(a + b, exact)
        if isinstance(op, ast.Sub):
            return Value(a - b, exact)
        if isinstance(op, ast.Mult):
            return Value(a * b, exact)
        if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod):
            if b == 0:
                raise self.fail("division by zero", ErrorCode.EXECUTION_ERROR)
            if isinstance(op, ast.Div):
                return Value(a / b, exact)
            if isinstance(op, ast.FloorDiv):
                return Value(Fraction(a // b), exact)
            return Value(a % b, exact)
        if isinstance(op, ast.Pow):
            return self.power(left, right)
        if isinstance(op, ast.BitXor):
            raise self.fail("'^' is not a power here: use '**'")
        raise self.fail(f"operator {type(op).__name__} is not supported")

    def power(self, base: Value, exponent: Value) -> Value:
        a, b = base.number, exponent.number
        exact = base.exact and exponent.exact
        if b.denominator == 1:
            e = b.numerator
            if a == 0 and e < 0:
                raise self.fail(
                    "zero cannot be raised to a negative power", ErrorCode.EXECUTION_ERROR
                )
            # Estimate the result size before computing it.
            bits = max(a.numerator.bit_length(), a.denominator.bit_length())
            if abs(e) * max(bits - 1, 0) > self.max_bits or abs(e) > self.max_bits:
                raise self.fail(
                    f"the power would exceed {self.max_bits} bits", ErrorCode.LIMIT_EXCEEDED
                )
            return Value(a**e, exact)
        if a < 0:
            raise self.fail(
                "a negative number to a fractional power is not real", ErrorCode.EXECUTION_ERROR
            )
        if a == 0:
            if b < 0:
                raise self.fail(
                    "zero cannot be raised to a negative power", ErrorCode.EXECUTION_ERROR
                )
            return Value(Fraction(0), exact)
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            try:
                result = _to_decimal(a) ** _to_decimal(b)
            except (InvalidOperation, OverflowError, ArithmeticError):
                raise self.fail("the power is out of range", ErrorCode.LIMIT_EXCEEDED) from None
            if not result.is_finite():
                raise self.fail("the power is out of range", ErrorCode.LIMIT_EXCEEDED)
        return self.check_size(Value(Fraction(result), False))

    def call(self, node: ast.Call, depth: int) -> Value:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise self.fail(f"only these functions may be called: {_FUNC_NAMES}")
        if node.keywords:
            raise self.fail("keyword arguments are not supported")
        args = [self.eval(arg, depth + 1) for arg in node.args]
        func, arity = _FUNCTIONS[node.func.id]
        low, high = arity
        if not low <= len(args) <= high:
            raise self.fail(f"{node.func.id} takes {low}..{high} arguments, got {len(args)}")
        return func(self, args)


def _to_decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def _sqrt(ev: _Evaluator, args: list[Value]) -> Value:
    (x,) = args
    if x.number < 0:
        raise ev.fail("square root of a negative number", ErrorCode.EXECUTION_ERROR)
    num, den = x.number.numerator, x.number.denominator
    rn, rd = math.isqrt(num), math.isqrt(den)
    if rn * rn == num and rd * rd == den:
        return Value(Fraction(rn, rd), x.exact)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return Value(Fraction(_to_decimal(x.number).sqrt()), False)


def _round(ev: _Evaluator, args: list[Value]) -> Value:
    x = args[0]
    digits = 0
    if len(args) == 2:
        if args[1].number.denominator != 1 or abs(args[1].number) > 1000:
            raise ev.fail("round's digits must be an integer between -1000 and 1000")
        digits = int(args[1].number)
    return Value(Fraction(round(x.number, digits)), x.exact)


_Function = Callable[[_Evaluator, list[Value]], Value]


def _reduce(pick: Callable[[list[Fraction]], Fraction]) -> _Function:
    def apply(_ev: _Evaluator, args: list[Value]) -> Value:
        return Value(pick([a.number for a in args]), all(a.exact for a in args))

    return apply


_FUNCTIONS: dict[str, tuple[_Function, tuple[int, int]]] = {
    "abs": (lambda _ev, a: Value(abs(a[0].number), a[0].exact), (1, 1)),
    "floor": (lambda _ev, a: Value(Fraction(math.floor(a[0].number)), a[0].exact), (1, 1)),
    "ceil": (lambda _ev, a: Value(Fraction(math.ceil(a[0].number)), a[0].exact), (1, 1)),
    "round": (_round, (1, 2)),
    "sqrt": (_sqrt, (1, 1)),
    "min": (_reduce(min), (1, 50)),
    "max": (_reduce(max), (1, 50)),
}
_FUNC_NAMES = sorted(_FUNCTIONS)


def _terminates(value: Fraction) -> bool:
    """True when the decimal expansion is finite (denominator has only factors 2 and 5)."""
    den = value.denominator
    for factor in (2, 5):
        while den % factor == 0:
            den //= factor
    return den == 1


def format_decimal(value: Fraction, digits: int = _DISPLAY_DIGITS) -> str:
    """Exact decimal text when it terminates (and is not huge), else ``digits`` significant."""
    if value.denominator == 1:
        return str(value.numerator)
    with localcontext() as ctx:
        if _terminates(value):
            # A terminating fraction p/(2^a 5^b) has at most len(p) + max(a, b) digits.
            ctx.prec = len(str(value.numerator)) + value.denominator.bit_length() + 2
            text = format(_to_decimal(value), "f")
            return text.rstrip("0").rstrip(".") if "." in text else text
        ctx.prec = digits
        return format(_to_decimal(value), "g")


class Calculator:
    name = "calculator"
    description = (
        "Evaluates an arithmetic expression exactly (rational arithmetic). Supports + - * / "
        "// % ** and parentheses, and the functions " + ", ".join(_FUNC_NAMES) + ". "
        "Returns the value as exact decimal or fraction text."
    )

    def __init__(self, *, limits: Limits, max_expression_chars: int = 1000, max_bits: int = 10_000):
        self.limits = limits
        self.max_expression_chars = max_expression_chars
        self.max_bits = max_bits
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": max_expression_chars,
                    "description": "For example: (2**64 - 1) / 3 + sqrt(2)",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        }

    def evaluate(self, expression: str) -> Value:
        if len(expression) > self.max_expression_chars:
            raise ToolFailure(
                ErrorCode.LIMIT_EXCEEDED,
                f"expression is longer than {self.max_expression_chars} characters",
                path="$.expression",
            )
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except (SyntaxError, ValueError) as exc:
            raise ToolFailure(
                ErrorCode.INVALID_ARGUMENTS,
                f"not an arithmetic expression: {getattr(exc, 'msg', exc)}",
                path="$.expression",
            ) from None
        except (RecursionError, MemoryError):
            raise ToolFailure(
                ErrorCode.LIMIT_EXCEEDED, "expression is too deeply nested", path="$.expression"
            ) from None
        return _Evaluator(self.max_bits).eval(tree)

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult:
        value = self.evaluate(arguments["expression"])
        number = value.number
        fraction_text = str(number) if value.exact else None
        decimal_text = format_decimal(number)
        exact_decimal = value.exact and _terminates(number)
        truncated = False
        # Keep content within the output limit: huge exact values fall back to 30 digits.
        budget = max(limits.max_output_bytes // 3, 64)
        if len(decimal_text) > budget:
            decimal_text = _approximate(number)
            exact_decimal = False
            truncated = True
        if fraction_text is not None and len(fraction_text) > budget:
            fraction_text = None
            truncated = True
        if exact_decimal:
            shown = decimal_text
        elif fraction_text is not None:
            shown = fraction_text
        else:
            shown = decimal_text
        content = {
            "value": shown,
            "exact": value.exact and not truncated,
            "fraction": fraction_text,
            "decimal": decimal_text,
        }
        if exact_decimal or shown == decimal_text == fraction_text:
            text = shown
        elif fraction_text is not None:
            text = f"{fraction_text} (≈ {decimal_text})"
        else:
            text = f"≈ {decimal_text}"
        return ToolResult(content=content, text=text, truncated=truncated)


def _approximate(value: Fraction) -> str:
    with localcontext() as ctx:
        ctx.prec = _DISPLAY_DIGITS
        return format(_to_decimal(value), "g")

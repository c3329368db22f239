"""calculator: exact results, refused constructs, size guards."""

from __future__ import annotations

import pytest
from lalo_tools.core import ErrorCode, Limits, ToolFailure
from lalo_tools.tools.calculator import Calculator

LIMITS = Limits(timeout_s=2.0, max_output_bytes=64 * 1024, max_rows=0)


@pytest.fixture
def calc() -> Calculator:
    return Calculator(limits=LIMITS, max_expression_chars=200, max_bits=10_000)


async def run(calc: Calculator, expression: str, limits: Limits = LIMITS) -> dict[str, object]:
    result = await calc.run({"expression": expression}, limits)
    assert isinstance(result.content, dict)
    return result.content


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("0.1 + 0.2", "0.3"),
        ("1/3", "1/3"),
        ("2**64 - 1", "18446744073709551615"),
        ("(1 + 2) * 3 - 4 / 2", "7"),
        ("-(-3) // 2", "1"),
        ("7 % -3", "-2"),
        ("1e-5", "0.00001"),
        ("2 ** -2", "0.25"),
        ("sqrt(16/9)", "4/3"),
        ("abs(-2.5) + floor(1.7) + ceil(1.2)", "5.5"),
        ("round(2.675, 2)", "2.68"),
        ("min(3, 1.5, 2) + max(1, 2)", "3.5"),
        ("+5", "5"),
    ],
)
async def test_exact_values(calc: Calculator, expression: str, value: str) -> None:
    content = await run(calc, expression)
    assert content["value"] == value
    assert content["exact"] is True


async def test_repeating_fraction_reports_fraction_and_decimal(calc: Calculator) -> None:
    content = await run(calc, "2/3")
    assert content["fraction"] == "2/3"
    assert str(content["decimal"]).startswith("0.6666666666")


async def test_irrational_results_are_marked_inexact(calc: Calculator) -> None:
    content = await run(calc, "sqrt(2)")
    assert content["exact"] is False
    assert str(content["decimal"]).startswith("1.41421356237309504880")
    assert (await run(calc, "2 ** 0.5"))["exact"] is False


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "(1).real",
        "x + 1",
        "[1, 2]",
        "'a' * 3",
        "lambda: 1",
        "1 if 1 else 2",
        "1 < 2",
        "True + 1",
        "sqrt(x=4)",
        "f(1)",
        "2 ^ 3",
        "1 +",
        "",
    ],
)
async def test_refuses_anything_but_arithmetic(calc: Calculator, expression: str) -> None:
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": expression}, LIMITS)
    assert info.value.code is ErrorCode.INVALID_ARGUMENTS
    assert info.value.path == "$.expression"


@pytest.mark.parametrize(
    "expression", ["1/0", "5 // 0", "5 % 0", "0 ** -1", "sqrt(-1)", "(-8) ** 0.5"]
)
async def test_math_errors_are_execution_errors(calc: Calculator, expression: str) -> None:
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": expression}, LIMITS)
    assert info.value.code is ErrorCode.EXECUTION_ERROR


@pytest.mark.parametrize(
    "expression",
    ["9 ** 9 ** 9", "10 ** 100000", "2 ** 20000", "(10 ** 1000) ** 20", "1e308 * 10 ** 3000"],
)
async def test_huge_numbers_are_refused_before_computing(calc: Calculator, expression: str) -> None:
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": expression}, LIMITS)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED


async def test_expression_length_and_depth_are_limited(calc: Calculator) -> None:
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": "1+" * 150 + "1"}, LIMITS)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": "-" * 150 + "1"}, LIMITS)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    # Parentheses alone add no depth.
    assert (await run(calc, "(" * 90 + "1" + ")" * 90))["value"] == "1"


async def test_parser_nesting_limit_is_a_clean_error() -> None:
    calc = Calculator(limits=LIMITS, max_expression_chars=1000)
    with pytest.raises(ToolFailure) as info:
        await calc.run({"expression": "(" * 400 + "1" + ")" * 400}, LIMITS)
    assert info.value.code in (ErrorCode.LIMIT_EXCEEDED, ErrorCode.INVALID_ARGUMENTS)


async def test_large_exact_value_is_cut_to_the_output_limit(calc: Calculator) -> None:
    small = Limits(timeout_s=2.0, max_output_bytes=300, max_rows=0)
    result = await calc.run({"expression": "3 ** 5000"}, small)
    assert result.truncated
    assert len(result.content_json()) < 600
    assert result.content["exact"] is False

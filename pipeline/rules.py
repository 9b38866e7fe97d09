"""Keep rules: `reason -> expression` from a job spec, compiled to polars expressions.

An expression is a small Python-like condition over columns, e.g.
`gopher_word_count >= 50 and gopher_word_count <= 100000`, `lang in ['en', 'fr']`,
`duplicate_of is None`, `not (ppl > 1200)`. Allowed: column names, numbers, strings, lists,
True/False/None, comparisons (`< <= > >= == != in not in is is not`), `and or not`, `+ - * / %`, and the
functions `abs`, `len` (characters of a string column) and `coalesce`. A row is kept when every rule is
true; a null result (a score that could not be computed) counts as false. The reason key may name
columns in braces, e.g. `"lang_{lang}"`, to put a value into the `reject_reason`.

Limits: a rule is at most `MAX_RULE_CHARS` (10,000) characters and its Python syntax tree at most
`MAX_RULE_DEPTH` (64) levels deep (`a > 1 and (b < 2 or not c)` is 6); longer or deeper rules are
refused with a `RuleError` naming the rule, never a crash of the parser.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import polars as pl

_CMP = {ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__", ast.GtE: "__ge__",
        ast.Eq: "__eq__", ast.NotEq: "__ne__"}
_BIN = {ast.Add: "__add__", ast.Sub: "__sub__", ast.Mult: "__mul__", ast.Div: "__truediv__",
        ast.Mod: "__mod__"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_RULE_CHARS = 10_000
MAX_RULE_DEPTH = 64
_SHOWN_CHARS = 80


class RuleError(ValueError):
    """A keep rule that does not parse or names an unknown column."""


@dataclass(frozen=True)
class Rule:
    reason: str
    text: str
    expr: pl.Expr
    reason_expr: pl.Expr
    columns: frozenset[str]


def _literal(node: ast.AST):
    value = ast.literal_eval(node)
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return value


class _Compiler:
    def __init__(self, text: str):
        self.text = text
        self.columns: set[str] = set()

    def fail(self, node: ast.AST, why: str):
        raise RuleError(f"{why} in rule {_shown(self.text)}")

    def __call__(self, node: ast.AST) -> pl.Expr:
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.BoolOp):
            parts = [self(v) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return ~self(node.operand)
            if isinstance(node.op, ast.USub):
                return -self(node.operand)
            self.fail(node, "unsupported unary operator")
        if isinstance(node, ast.BinOp):
            op = _BIN.get(type(node.op))
            if op is None:
                self.fail(node, "unsupported operator")
            return getattr(self(node.left), op)(self(node.right))
        if isinstance(node, ast.Compare):
            out = None
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                out_i = self._compare(left, op, right)
                out = out_i if out is None else out & out_i
                left = right
            return out
        if isinstance(node, ast.Name):
            if node.id in ("True", "False", "None"):
                return pl.lit(_literal(node))
            self.columns.add(node.id)
            return pl.col(node.id)
        if isinstance(node, ast.Constant):
            return pl.lit(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self(a) for a in node.args]
            if node.func.id == "abs" and len(args) == 1:
                return args[0].abs()
            if node.func.id == "len" and len(args) == 1:
                return args[0].str.len_chars()
            if node.func.id == "coalesce" and args:
                return pl.coalesce(args)
            self.fail(node, f"unknown function {node.func.id!r} (allowed: abs, len, coalesce)")
        self.fail(node, f"unsupported syntax {type(node).__name__}")

    def _compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> pl.Expr:
        if isinstance(op, (ast.In, ast.NotIn)):
            try:
                values = _literal(right)
            except ValueError:
                self.fail(right, "'in' needs a literal list")
            expr = self(left).is_in(values)
            return ~expr if isinstance(op, ast.NotIn) else expr
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right, ast.Constant) and right.value is None):
                self.fail(right, "'is' only compares with None")
            expr = self(left).is_null()
            return ~expr if isinstance(op, ast.IsNot) else expr
        name = _CMP.get(type(op))
        if name is None:
            self.fail(op, "unsupported comparison")
        return getattr(self(left), name)(self(right))


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut to its first `_SHOWN_CHARS` characters."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text):,} characters)"


def _depth(tree: ast.AST) -> int:
    """Levels of the syntax tree, counted without recursion (the tree may be very deep)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, d = todo.pop()
        deepest = max(deepest, d)
        todo.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def compile_rule(reason: str, text: str) -> Rule:
    """Compile one `reason: expression` pair; raises RuleError with the rule text on bad syntax,
    or when the rule is longer than `MAX_RULE_CHARS` or nested deeper than `MAX_RULE_DEPTH`."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"rule {_shown(str(reason))} must be a non-empty expression string")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"rule {_shown(str(reason))} is {len(text):,} characters long, more than the limit of "
                        f"{MAX_RULE_CHARS:,}: {_shown(text)}")
    too_deep = (f"rule {_shown(str(reason))} is nested deeper than the limit of {MAX_RULE_DEPTH} levels: "
                f"{_shown(text)}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise RuleError(f"cannot parse rule {_shown(str(reason))}: {_shown(text)} ({e.msg})") from None
    except (RecursionError, MemoryError):  # the parser's own stack overflowed
        raise RuleError(too_deep) from None
    if _depth(tree) > MAX_RULE_DEPTH:
        raise RuleError(too_deep)
    comp = _Compiler(text)
    expr = comp(tree)
    names = _PLACEHOLDER.findall(reason)
    if names:
        template = _PLACEHOLDER.sub("{}", reason)
        reason_expr = pl.format(template, *[pl.col(n).cast(pl.Utf8).fill_null("null") for n in names])
    else:
        reason_expr = pl.lit(reason)
    return Rule(reason, text, expr, reason_expr, frozenset(comp.columns) | frozenset(names))


def compile_rules(rules: dict[str, str]) -> list[Rule]:
    return [compile_rule(k, v) for k, v in rules.items()]


def first_failure(df: pl.DataFrame, rules: list[Rule]) -> pl.Series:
    """Per row, the reason of the first rule that is not true (null when all pass)."""
    if not rules or df.height == 0:
        return pl.Series("reason", [None] * df.height, dtype=pl.Utf8)
    missing = sorted({c for r in rules for c in r.columns} - set(df.columns))
    if missing:
        raise RuleError(f"keep rules use unknown columns {missing}; available: {sorted(df.columns)}")
    chain = pl.when(~rules[0].expr.fill_null(False)).then(rules[0].reason_expr)
    for r in rules[1:]:
        chain = chain.when(~r.expr.fill_null(False)).then(r.reason_expr)
    return df.select(chain.otherwise(pl.lit(None, dtype=pl.Utf8)).alias("reason"))["reason"]

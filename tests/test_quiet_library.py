"""The library logs and warns; it prints only where the caller asked (issue 14, item 7)."""

from __future__ import annotations

import ast
import logging
import pathlib

import numpy as np

import simdex

PACKAGE = pathlib.Path(simdex.__file__).parent


def _prints_outside_verbose(tree: ast.AST) -> list[int]:
    """Line numbers of print() calls not inside an ``if <...verbose...>:`` block."""
    bad: list[int] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and "verbose" in ast.unparse(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
            and not guarded
        ):
            bad.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return bad


# The `simdex` command (python -m simdex, simdex serve): printing is what they do.
CLI_MODULES = frozenset({"__main__.py", "apps/service/cli.py"})


def test_no_print_outside_explicit_verbose_output():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        rel = str(path.relative_to(PACKAGE))
        if rel in CLI_MODULES:  # command-line programs: printing is their output
            continue
        bad = _prints_outside_verbose(ast.parse(path.read_text(encoding="utf-8")))
        if bad:
            offenders[rel] = bad
    assert not offenders, f"print() outside `if verbose`: {offenders}"


def test_the_checker_finds_prints():
    src = "def f(verbose):\n    print(1)\n    if verbose:\n        print(2)\n    else:\n        print(3)\n"
    assert _prints_outside_verbose(ast.parse(src)) == [2, 6]


def test_simdex_logger_is_quiet_by_default_and_calibrate_prints_nothing(capsys):
    import simdex._log  # noqa: F401

    log = logging.getLogger("simdex")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)
    from simdex.calibration import calibrate

    rng = np.random.default_rng(0)
    d = np.sort(rng.random((50, 2)), axis=1)
    nl = rng.integers(0, 3, (50, 2))
    q = rng.integers(0, 3, 50)
    calibrate(d, nl, q, k=1, thresholds_targets={"precision": 0.99})
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    calibrate(d, nl, q, k=1, verbose=1)
    assert capsys.readouterr().out.strip()  # verbose=1: the caller asked for the table

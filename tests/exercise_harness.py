"""What every chapter's exercise tests assert about a check: right answers pass, known mistakes get their hint."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from clip_tutorial.exercises import CheckResult
from clip_tutorial.exercises.core import wrap_feedback


def assert_passes(check: Callable[..., CheckResult], fn: Callable[..., Any], capsys: Any, trials: int,
                  seeds: Iterable[int | None] = (0, None)) -> None:
    """A correct solution passes for fixed and fresh seeds, and the check prints exactly its message."""
    for seed in seeds:
        result = check(fn, seed=seed, trials=trials)
        assert isinstance(result, CheckResult) and result.passed and result.message.startswith("✅"), result.message
        assert capsys.readouterr().out.strip() == wrap_feedback(result.message)


def assert_fails_with_hint(check: Callable[..., CheckResult], fn: Callable[..., Any], hint: str, capsys: Any,
                           seeds: Iterable[int] = (0, 1)) -> None:
    """A typical mistake fails, and of all the check's hints it gets exactly the one written for it."""
    for seed in seeds:
        result = check(fn, seed=seed)
        hints = [line for line in result.message.splitlines() if line.startswith("💡 Hint:")]
        assert not result.passed and result.message.startswith("❌"), result.message
        assert len(hints) == 1 and hint in hints[0], result.message
        assert capsys.readouterr().out.strip() == wrap_feedback(result.message)

"""The machinery behind the book's exercise checks.

A check runs the reader's function and the package's reference on the same fresh random inputs,
several times and with several shapes, and explains the first difference in plain words: which
inputs, which shape or dtype was expected, how far the values are off, and, when the reader's
result equals a known wrong implementation (a :class:`Hint`), what the usual mistake is.

Explained in Chapter 1 (the first exercises); every later chapter's exercises use it too.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
import numbers
import re
import secrets
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clip_tutorial.core.checks import check_positive_int

__all__ = ["CheckResult", "Hint", "check_function", "run_check", "report", "wrap_feedback", "ask_first"]


@dataclass(frozen=True)
class Hint:
    """A common mistake and the advice to give when the reader's function makes it.

    Give exactly one way to recognise the mistake. Explained in Chapter 1.

    Attributes:
        message: the advice, shown under the feedback when the mistake is recognised.
        mistake: a known wrong implementation, called on the same inputs; the hint is shown when
            the reader's result equals its result.
        detect: ``detect(got, expected, inputs) -> bool`` for mistakes that are easier to test directly.
        error_contains: show the hint when the reader's function raises an exception whose
            message contains this text.
    """

    message: str
    mistake: Callable[..., Any] | None = None
    detect: Callable[[Any, Any, tuple], bool] | None = None
    error_contains: str | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.mistake, self.detect, self.error_contains))
        if given != 1:
            raise ValueError(f"Hint: expected exactly one of mistake, detect, error_contains, got {given}")

    def matches(self, got: Any, expected: Any, inputs: tuple, atol: float, rtol: float) -> bool:
        """Whether the reader's result ``got`` shows this mistake (never raises)."""
        try:
            if self.detect is not None:
                return bool(self.detect(got, expected, inputs))
            if self.mistake is not None:
                wrong = self.mistake(*_clone_all(inputs))
                return _compare(got, wrong, atol, rtol) is None
        except Exception:  # a hint that cannot be evaluated simply does not apply
            return False
        return False


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: truthy when the reader's function passed.

    Explained in Chapter 1.

    Attributes:
        passed: whether every trial matched the reference.
        message: the feedback, starting with ✅ or ❌.
        name: the name of the check.
    """

    passed: bool
    message: str
    name: str = "check"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed}, name={self.name!r})"

    def _repr_markdown_(self) -> str:
        return f"**{'✅ passed' if self.passed else '❌ not yet'}**: `{self.name}` (feedback printed above)"


def ensure_callable(fn: Any, name: str) -> None:
    """Raise a TypeError naming ``name`` unless ``fn`` is callable (a function, not its result)."""
    if not callable(fn):
        raise TypeError(
            f"{name}: expected a function, got a {type(fn).__name__}; pass the function itself, "
            "e.g. check(my_function), not check(my_function(...))"
        )


def _clone(x: Any, grad: bool = False) -> Any:
    if isinstance(x, torch.nn.Parameter):
        return torch.nn.Parameter(x.detach().clone(), requires_grad=x.requires_grad)
    if isinstance(x, torch.Tensor):
        y = x.detach().clone()
        return y.requires_grad_(True) if grad and y.is_floating_point() else y
    return copy.deepcopy(x)


def _clone_all(inputs: tuple, grad: bool = False) -> tuple:
    return tuple(_clone(x, grad) for x in inputs)


def _shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


def _describe(inputs: tuple, names: Sequence[str]) -> str:
    parts = []
    for name, x in zip(names, inputs):
        if isinstance(x, torch.Tensor) and x.ndim == 0:
            parts.append(f"{name} = {float(x.detach()):.4g}")
        elif isinstance(x, torch.Tensor):
            parts.append(f"{name} of shape {_shape(x)}")
        else:
            parts.append(f"{name} = {x!r:.40}")
    return ", ".join(parts)


def _shape_hint(got: torch.Size, expected: torch.Size) -> str:
    if len(expected) == 0:
        return " Expected a single number (a 0-dim tensor): reduce with .mean() or .sum(), or index it."
    if len(got) == len(expected) == 2 and tuple(got) == tuple(expected)[::-1]:
        return " Your result looks transposed."
    if [s for s in got if s != 1] == [s for s in expected if s != 1]:
        return " A dimension of size 1 was lost or added: did you call .squeeze() or forget keepdim=True?"
    return ""


def _compare(got: Any, expected: Any, atol: float, rtol: float) -> str | None:
    """Return None when ``got`` matches ``expected``, else a plain-words description of the difference."""
    if not isinstance(expected, torch.Tensor):
        if isinstance(expected, float) and isinstance(got, (int, float)):
            return None if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) else f"Expected {expected:.6g}, got {got:.6g}."
        return None if got == expected else f"Expected {expected!r}, got {got!r}."
    want = f"a torch.Tensor of shape {_shape(expected)}"
    if got is None:
        return f"Your function returned None; expected {want}. Did you forget the `return` statement?"
    if isinstance(got, (bool, int, float)):
        return f"Your function returned a Python {type(got).__name__} ({got:.6g}); expected {want}. Did you call .item()? Return the tensor."
    if isinstance(got, (tuple, list)):
        return f"Your function returned a {type(got).__name__} of {len(got)} items; expected a single tensor ({want})."
    if not isinstance(got, torch.Tensor):
        return f"Your function returned a {type(got).__module__}.{type(got).__name__}; expected {want}."
    if got.shape != expected.shape:
        return f"Expected a result of shape {_shape(expected)}, got shape {_shape(got)}." + _shape_hint(got.shape, expected.shape)
    if expected.is_floating_point() and not got.is_floating_point():
        return f"Expected floating-point values (dtype {expected.dtype}), got dtype {got.dtype}."
    if not expected.is_floating_point() and got.dtype != expected.dtype:
        return f"Expected dtype {expected.dtype}, got dtype {got.dtype}."
    g, e = got.detach().to("cpu"), expected.detach().to("cpu")
    if not expected.is_floating_point():
        wrong = (g != e).flatten().nonzero().flatten()
        if wrong.numel() == 0:
            return None
        i = int(wrong[0])
        return f"{wrong.numel()} of {e.numel()} values differ; the first at position {i}: expected {e.flatten()[i].item()}, got {g.flatten()[i].item()}."
    g, e = g.double(), e.double()
    if torch.isnan(g).any() and not torch.isnan(e).any():
        return f"Your result contains NaN (not a number) in {int(torch.isnan(g).sum())} of {g.numel()} places: a division by zero, or log of 0?"
    close = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    # Matching values (equal infinities included) count as no difference; an infinity where a
    # finite value was expected (or the reverse) counts as an infinite one.
    diff = torch.where(close, 0.0, (g - e).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
    if e.ndim == 0:
        text = f"Expected {e.item():.6g}, got {g.item():.6g} (tolerance atol={atol:g}, rtol={rtol:g})."
        ratio = g.item() / e.item() if e.item() else math.nan
        for k in range(2, 65):
            if math.isclose(ratio, k, rel_tol=1e-4) or math.isclose(ratio, 1 / k, rel_tol=1e-4):
                text += f" Your value is {ratio:.4g} times the expected one."
                break
        return text
    flat = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape)) if e.ndim else ()
    where = f" at index {index}" if index else ""
    text = (f"{int((~close).sum())} of {e.numel()} values differ. The largest difference is {diff.flatten()[flat].item():.3g}{where}: "
            f"expected {e.flatten()[flat].item():.6g}, got {g.flatten()[flat].item():.6g} (tolerance atol={atol:g}, rtol={rtol:g}).")
    denom = float((e * e).sum())
    if denom > 0:
        factor = float((g * e).sum()) / denom
        if abs(factor - 1) > 1e-3 and bool(torch.isclose(g, factor * e, rtol=rtol, atol=atol).all()):
            text += f" Every value is {factor:.4g} times the expected one."
    return text


def _explain_exception(err: Exception) -> str:
    if isinstance(err, NotANumber):  # the reader's function returned, so the check's own line is no help
        return str(err)
    text = f"Your function raised {type(err).__name__}: {err}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
    own = [f for f in frames if "site-packages" not in f.filename and "/torch/" not in f.filename]
    frame = own[-1] if own else (frames[-1] if frames else None)
    if frame is not None and frame.line:
        text += f"\nIt happened at line {frame.lineno}: {frame.line.strip()}"
    if isinstance(err, NotImplementedError):
        text += "\nReplace the `raise NotImplementedError` line with your implementation."
    return text


def _argument_names(fn: Callable[..., Any], count: int) -> list[str]:
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):
        names = []
    return (names + [f"argument {i}" for i in range(len(names), count)])[:count]


def check_function(user_fn: Callable[..., Any], reference_fn: Callable[..., Any],
                   make_inputs: Callable[[torch.Generator, int], tuple], *, trials: int = 5, atol: float = 1e-5,
                   rtol: float = 1e-4, hints: Sequence[Hint] = (), name: str | None = None,
                   arg_names: Sequence[str] | None = None, seed: int | None = None, require_grad: bool = False,
                   verbose: bool = True) -> CheckResult:
    """Compare the reader's function with a reference on fresh random inputs and explain any difference.

    Each trial draws inputs with ``make_inputs(generator, trial)``; the reader's function and the
    reference each get their own copy. The check stops at the first trial that fails: an exception
    raised by the reader's code, a changed input, a wrong type, shape or dtype, or values outside
    the tolerance. Explained in Chapter 1.

    Args:
        user_fn: the reader's function.
        reference_fn: the package's correct implementation.
        make_inputs: builds one trial's arguments from a ``torch.Generator`` and the trial index
            (use the index to put edge cases such as a batch of one into fixed trials).
        trials: number of trials.
        atol: absolute tolerance of the comparison.
        rtol: relative tolerance of the comparison.
        hints: common mistakes to recognise in a wrong result.
        name: the check's name shown in the feedback (default: the reference's name).
        arg_names: names of the arguments in the feedback (default: the reference's parameter names).
        seed: seed of the inputs; by default a fresh one each call, shown in the feedback of a failure.
        require_grad: floating inputs require gradients and the result must be differentiable
            (for losses that training will backpropagate through).
        verbose: print the feedback.

    Returns:
        A :class:`CheckResult`, truthy when every trial passed.

    Raises:
        TypeError: if ``user_fn``, ``reference_fn`` or ``make_inputs`` is not callable, or ``trials`` not an int.
        ValueError: if ``trials`` is below 1.
    """
    for arg, label in ((user_fn, "user_fn"), (reference_fn, "reference_fn"), (make_inputs, "make_inputs")):
        ensure_callable(arg, label)
    trials = check_positive_int("trials", trials)
    name = name or getattr(reference_fn, "__name__", "check")
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    generator = torch.Generator().manual_seed(seed)
    shapes = []
    for trial in range(trials):
        inputs = make_inputs(generator, trial)
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        names = list(arg_names) if arg_names is not None else _argument_names(reference_fn, len(inputs))
        where = _describe(inputs, names)
        expected = reference_fn(*_clone_all(inputs))
        mine = _clone_all(inputs, grad=require_grad)
        try:
            with torch.enable_grad():
                got = user_fn(*mine)
        except Exception as err:
            problem = _explain_exception(err)
            found = [h.message for h in hints if h.error_contains and h.error_contains in str(err)]
        else:
            changed = [n for n, a, b in zip(names, inputs, mine)
                       if isinstance(a, torch.Tensor) and not torch.equal(a, b.detach())]
            problem = _compare(got, expected, atol, rtol)
            if changed:
                problem = (f"Your function changed its input {', '.join(changed)} in place. Compute on new tensors instead "
                           "(write x = x / n, not x /= n or x.div_(n)), so that the caller's data stays intact.")
            elif problem is None and require_grad and isinstance(got, torch.Tensor) and got.grad_fn is None:
                problem = ("Your result is not connected to the autograd graph (it has no grad_fn), so training could not "
                           "backpropagate through it. Avoid .item(), float(...), NumPy and torch.tensor(...) inside it.")
            found = [] if problem is None or changed else [h.message for h in hints if h.matches(got, expected, inputs, atol, rtol)]
        if problem is not None:
            lines = [f"❌ {name}: not yet. Trial {trial + 1} of {trials} (seed {seed}), inputs: {where}.", problem]
            lines += [f"💡 Hint: {m}" for m in dict.fromkeys(found)]
            return _finish(CheckResult(False, "\n".join(lines), name), verbose)
        shapes.append(" × ".join(_shape(x) for x in inputs if isinstance(x, torch.Tensor) and x.ndim))
    message = f"✅ {name}: passed! Your function matches the reference on {trials} random inputs of shapes {'; '.join(shapes)}."
    return _finish(CheckResult(True, message, name), verbose)


def run_check(fn: Any, reference: Callable[..., Any], make: Callable[[torch.Generator, int], tuple],
              hints: list[Hint], name: str, trials: int, seed: int | None, verbose: bool,
              **options: Any) -> CheckResult:
    """What every chapter's ``check_*`` does: make sure ``fn`` is callable, then :func:`check_function`.

    Args:
        fn: the reader's function.
        reference: the correct implementation.
        make: ``make(generator, trial)`` returns one tuple of fresh random inputs.
        hints: known mistakes and the advice to give when ``fn`` makes one.
        name: the function's name, used in the feedback.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one when ``None``).
        verbose: print the feedback.
        **options: passed on to :func:`check_function` (e.g. ``atol``, ``require_grad``).
    """
    ensure_callable(fn, "fn")
    return check_function(fn, reference, make, trials=trials, hints=hints, name=name, seed=seed, verbose=verbose,
                          **options)


#: Width of a printed line of feedback: the book's code column.
FEEDBACK_WIDTH = 88


def wrap_feedback(message: str, width: int = FEEDBACK_WIDTH) -> str:
    """``message`` with each line wrapped at ``width`` columns, as :func:`report` prints it.

    Indented lines (code quoted in the feedback) and long words (paths, numbers) are kept whole.
    """
    lines = []
    for line in message.splitlines():
        if len(line) <= width or line[:1].isspace():
            lines.append(line)
        else:
            lines.append(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False,
                                       subsequent_indent="   "))
    return "\n".join(lines)


def report(result: CheckResult, verbose: bool) -> CheckResult:
    """Print the feedback of ``result``, wrapped to the book's column, when ``verbose``; return ``result``."""
    if verbose:
        print(wrap_feedback(result.message))
    return result


def ask_first(name: str, what: str, verbose: bool) -> CheckResult:
    """The falsy result of a check called before the reader wrote an answer (``None``): no error, a reminder."""
    return report(CheckResult(False, f"❌ {name}: write your {what} first, then run this cell again.", name), verbose)


_finish = report


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a check's small experiment on one CPU thread: on such small tensors more threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class NotANumber(TypeError):
    """Raised (by :func:`as_number`) when the reader's function returns something other than one number."""


def as_number(value: Any, call: str) -> float:
    """``value`` as a float when it is one number (a Python number or a one-element tensor)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if value is None:
        raise NotANumber(f"{call} returned None; expected a number. Did you forget the `return` statement?")
    got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    raise NotANumber(f"{call} returned {got}; expected a single number (a float, or a one-element tensor).")


def finish_check(result: CheckResult, verbose: bool, passed: str, where: tuple[str, Any] = ("$^", "")) -> CheckResult:
    """Word the feedback in the exercise's terms (``where`` renames the position of a difference), then print."""
    message = f"✅ {result.name}: passed! {passed}" if result.passed else re.sub(*where, result.message)
    return report(CheckResult(result.passed, message, result.name), verbose)

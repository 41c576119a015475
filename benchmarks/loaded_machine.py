#!/usr/bin/env python3
"""How much a competing CPU load slows the book's training, for several thread settings.

The default workload (``--workload short``) is one short run of Chapter 3.3 (``run_short``: a
fresh tiny CLIP, 100 steps of 128 pairs on 5,000 ShapesWorld pairs, then a zero-shot evaluation
on 500 images), the kind of run that the slow cells of 3.3 repeat; ``--workload demo`` is the
live training cell of Chapter 1.1 (``train_recipe("ch1-demo")``), the book's longest cell.
Each setting is timed in a fresh process (the OpenMP runtime reads its variables once, when
``import torch`` loads it), ``--repeat`` times after one warm-up run:

- ``quiet``: nothing else runs (other than what already runs on the machine: the load average
  is recorded before and after);
- ``busy``: one pure-Python busy loop per usable CPU competes for the cores;
- ``twin``: a second process runs the same workload, with the same setting, without pause
  (two builds, or a build beside a test run, on one machine).

The settings are the current defaults and candidate fixes: ``passive`` sets
``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep at once instead of spinning), ``1 thread``
calls ``torch.set_num_threads(1)``, ``1 interop thread`` calls ``torch.set_num_interop_threads(1)``
(not run by default), and ``book`` is what a book build runs: the environment that
``tools/build_book.py`` gives the kernels, then ``clip_tutorial.setup_notebook()``.

Prints a markdown table of the median seconds per run, quiet and loaded, and the loaded/quiet
slowdowns (medians of runs measured in this one invocation), and writes
``data/benchmarks/loaded_machine.json``.

Usage::

    .venv/bin/python benchmarks/loaded_machine.py
    .venv/bin/python benchmarks/loaded_machine.py --rounds 2 --settings default book
    .venv/bin/python benchmarks/loaded_machine.py --workload demo --settings book --repeat 1 \\
        --output data/benchmarks/loaded_machine_demo.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path)

sys.path.insert(0, str(ROOT / "tools"))
from build_book import kernel_environment  # noqa: E402

DEFAULT_OUTPUT = ROOT / "data" / "benchmarks" / "loaded_machine.json"
# Variables that change how the OpenMP and BLAS runtimes behave: removed from every worker's
# environment, so that each setting starts from the same clean slate.
RUNTIME_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "OPENBLAS_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES")

# name -> (extra environment, torch.set_num_threads, torch.set_num_interop_threads, call setup_notebook)
SETTINGS: dict[str, tuple[dict[str, str], int | None, int | None, bool]] = {
    "default": ({}, None, None, False),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None, None, False),
    "spin 100": ({"GOMP_SPINCOUNT": "100"}, None, None, False),
    "spin 1k": ({"GOMP_SPINCOUNT": "1000"}, None, None, False),
    "spin 10k": ({"GOMP_SPINCOUNT": "10000"}, None, None, False),
    "spin 100k": ({"GOMP_SPINCOUNT": "100000"}, None, None, False),
    "1 thread": ({}, 1, None, False),
    "1 interop thread": ({}, None, 1, False),
    "book": (kernel_environment({}), None, None, True),
}
DEFAULT_SETTINGS = ("default", "passive", "1 thread", "book")
LOADS = ("busy", "twin")
WORKLOADS = {
    "short": "run_short: 100 steps of 128 pairs on 5,000 ShapesWorld pairs, then a 500-image zero-shot evaluation",
    "demo": "train_recipe('ch1-demo'): the live training cell of Chapter 1.1 (data, training, evaluation)",
}
BUSY_LOOP = "while True:\n    pass\n"


# -- the worker: one process, one setting -------------------------------------------------------


def _openmp_runtime() -> str:
    """The OpenMP library this process loaded (read from its memory map), e.g. ``libgomp.so.1``."""
    names = set()
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1] if line.split() else ""
                name = os.path.basename(path)
                if name.startswith(("libgomp", "libiomp", "libomp")):
                    names.add(name)
    except OSError:
        return "unknown"
    return ", ".join(sorted(names)) or "none found"


def worker(setting: str, workload: str, repeat: int, forever: bool) -> None:
    """Time ``workload`` ``repeat`` times (or run it until killed) and print one JSON line."""
    _, threads, interop, setup = SETTINGS[setting]
    import torch

    if interop is not None:
        torch.set_num_interop_threads(interop)
    if threads is not None:
        torch.set_num_threads(threads)
    from dataclasses import replace

    from clip_tutorial import TrainConfig
    from clip_tutorial.apps.experiments import make_experiment_data, run_short

    if setup:
        import clip_tutorial

        clip_tutorial.setup_notebook(seed=0, verbose=False)
    data = make_experiment_data(n_train=5000, seed=0)
    base = TrainConfig(steps=100, batch_size=128, lr=2e-3, warmup_steps=10, weight_decay=0.1)
    run_short(data, replace(base, steps=10), n_eval=100)  # warm-up: first calls allocate and load
    if workload == "short":
        def run() -> None:
            run_short(data, base, n_eval=500)
    else:
        from clip_tutorial.train.recipes import train_recipe

        def run() -> None:
            train_recipe("ch1-demo", device="cpu", progress=False)
    seconds = []
    while forever or len(seconds) < repeat:
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(),
                      "interop_threads": torch.get_num_interop_threads(), "openmp": _openmp_runtime(),
                      "parallel_info": torch.__config__.parallel_info()}))


# -- the parent: settings x loads ---------------------------------------------------------------


def _environment(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RUNTIME_VARIABLES}
    env.update(SETTINGS[setting][0])
    return env


def _spawn(setting: str, workload: str, repeat: int, forever: bool = False, **kwargs: Any) -> subprocess.Popen:
    command = [sys.executable, __file__, "--worker", setting, "--workload", workload, "--repeat", str(repeat)]
    if forever:
        command.append("--forever")
    return subprocess.Popen(command, env=_environment(setting), text=True, **kwargs)


def _start_load(kind: str, setting: str, workload: str, cpus: int) -> list[subprocess.Popen]:
    if kind == "busy":
        return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(cpus)]
    if kind == "twin":
        return [_spawn(setting, workload, 1, forever=True, stdout=subprocess.DEVNULL)]
    raise ValueError(f"unknown load {kind!r}")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(setting: str, workload: str, load: str | None, repeat: int, cpus: int, settle: float) -> dict[str, Any]:
    """Run one worker for ``setting`` under ``load`` (None: quiet) and return its figures."""
    competitors = _start_load(load, setting, workload, cpus) if load else []
    try:
        if competitors:
            time.sleep(settle)  # let the competitors get going (the twin imports torch and renders data)
        before = os.getloadavg()[0]
        worker_process = _spawn(setting, workload, repeat, stdout=subprocess.PIPE)
        out, _ = worker_process.communicate()
        after = os.getloadavg()[0]
    finally:
        _stop(competitors)
    if worker_process.returncode != 0:
        raise RuntimeError(f"the worker for {setting!r} ({load or 'quiet'}) exited with {worker_process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["load_average"] = [round(before, 2), round(after, 2)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=list(SETTINGS),
                        help=f"the first is the reference (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--workload", choices=list(WORKLOADS), default="short",
                        help="short: one run of Chapter 3.3 (default); demo: the live training of Chapter 1.1")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per process (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over every setting and load (default 1)")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds the competitors run before timing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.workload, args.repeat, args.forever)
        return 0
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the competitors on the way out

    sys.path.insert(0, str(ROOT))
    from clip_tutorial.core.device import cpu_budget

    cpus = cpu_budget()
    conditions = ["quiet", *args.loads]
    runs: dict[str, dict[str, list[float]]] = {s: {c: [] for c in conditions} for s in args.settings}
    details: dict[str, dict[str, list[dict]]] = {s: {c: [] for c in conditions} for s in args.settings}
    for round_ in range(1, args.rounds + 1):
        for setting in args.settings:
            for condition in conditions:
                result = measure(setting, args.workload, None if condition == "quiet" else condition,
                                 args.repeat, cpus, args.settle)
                runs[setting][condition] += result["seconds"]
                info = result.pop("parallel_info")
                details[setting][condition].append(result)
                print(f"round {round_}, {setting}, {condition}: "
                      + ", ".join(f"{s:.2f}" for s in result["seconds"])
                      + f" s ({result['threads']} threads, load average {result['load_average']})",
                      file=sys.stderr, flush=True)

    medians = {s: {c: statistics.median(v) for c, v in runs[s].items()} for s in args.settings}
    baseline = medians[args.settings[0]]["quiet"]
    rows, summary = [], {}
    for setting in args.settings:
        m = medians[setting]
        summary[setting] = {
            "median_s": {c: round(v, 3) for c, v in m.items()},
            "slowdown": {load: round(m[load] / m["quiet"], 2) for load in args.loads},
            "quiet_vs_first": round(m["quiet"] / baseline, 2),
            "threads": details[setting]["quiet"][0]["threads"],
        }
        rows.append([setting, str(summary[setting]["threads"]), f"{m['quiet']:.2f}",
                     f"{summary[setting]['quiet_vs_first']:.2f}×",
                     *(f"{m[load]:.2f}" for load in args.loads),
                     *(f"{summary[setting]['slowdown'][load]:.2f}×" for load in args.loads)])
    print_table(["setting", "threads", "quiet (s)", f"quiet vs {args.settings[0]}",
                 *(f"{load} (s)" for load in args.loads), *(f"{load}/quiet" for load in args.loads)], rows)

    if not args.no_write:
        import torch

        report = {
            "command": " ".join(["benchmarks/loaded_machine.py", *(argv if argv is not None else sys.argv[1:])]),
            "workload": WORKLOADS[args.workload],
            "cpu_budget": cpus,
            "settings": {s: {"env": SETTINGS[s][0], "threads": SETTINGS[s][1], "interop_threads": SETTINGS[s][2],
                             "setup_notebook": SETTINGS[s][3]} for s in args.settings},
            "repeat": args.repeat, "rounds": args.rounds,
            "openmp": details[args.settings[0]]["quiet"][0]["openmp"],
            "parallel_info": info,
            "runs_s": {s: {c: [round(x, 3) for x in v] for c, v in runs[s].items()} for s in args.settings},
            "load_average": {s: {c: [d["load_average"] for d in v] for c, v in details[s].items()}
                             for s in args.settings},
            "summary": summary,
            "machine": machine_info(torch=torch.__version__),
        }
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

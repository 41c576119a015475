#!/usr/bin/env python3
"""How long one text-to-image query takes in ``clip_tutorial.apps.search.EmbeddingIndex`` on the CPU.

An index of ``--count`` random unit embeddings is built for every dimension in ``--dims`` (64, the
shipped tiny models' ``embed_dim``, and 512, ViT-B/32's). Each query is a single vector searched
for its ``k=10`` best rows, the way a search box sends one query at a time; the figure is the
median over ``--queries`` queries after a warm-up.

The reference, timed in the same run, is the straightforward numpy search: the similarity vector ``data @ query``, ``np.argpartition`` for the
``k`` largest, then a sort of those ``k``. Both use ``--threads`` threads. The two alternate in
blocks of ``--block`` queries, each block after ``--warmup`` untimed queries: alternating query
by query would let the idle threads of one library (which spin while they wait for work) steal
the cores from the other, slowing both several-fold. The rows the two return are checked to agree. The target for Chapter 5.2 is a median of at most 10 ms per
query over 100,000 embeddings.

Usage::

    python benchmarks/search_latency.py [--count 100000] [--dims 64 512] [--queries 200] [--block 25] [--threads 2] [--no-write]

Writes data/benchmarks/search_latency.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

TARGET_MS = 10.0


def _numpy_search(data, query, k: int):
    """The reference: rows of the ``k`` largest similarities, best first."""
    import numpy as np

    similarity = data @ query
    top = np.argpartition(-similarity, k - 1)[:k]
    return top[np.argsort(-similarity[top], kind="stable")]


def _measure(count: int, dim: int, queries: int, warmup: int, k: int, block: int) -> dict:
    import numpy as np
    import torch

    from clip_tutorial.apps.search import EmbeddingIndex

    generator = torch.Generator().manual_seed(dim)
    data = torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)
    probes = torch.randn(queries + warmup, dim, generator=generator)
    index = EmbeddingIndex(dim)
    started = time.perf_counter()
    index.add(data)
    build = time.perf_counter() - started
    data_np = index.embeddings.numpy()
    probes_np = torch.nn.functional.normalize(probes, dim=1).numpy()

    ours: list[float] = []
    reference: list[float] = []
    for start in range(0, queries, block):  # alternate blocks: index, then numpy, each with its own warm-up
        chosen = range(start, min(start + block, queries))
        for method, times in ((lambda i: index.search(probes[i], k=k).rows[0].tolist(), ours),
                              (lambda i: _numpy_search(data_np, probes_np[i], k).tolist(), reference)):
            for i in range(warmup):
                method(queries + i)
            for i in chosen:
                t0 = time.perf_counter()
                method(i)
                times.append(time.perf_counter() - t0)
    mismatches = sum(index.search(probes[i], k=k).rows[0].tolist() != _numpy_search(data_np, probes_np[i], k).tolist()
                     for i in range(queries))
    ours_ms, ref_ms = statistics.median(ours) * 1000, statistics.median(reference) * 1000
    return {"count": count, "dim": dim, "k": k, "queries": queries, "warmup": warmup, "block": block,
            "build_seconds": build, "median_ms": ours_ms, "p90_ms": float(np.percentile(ours, 90) * 1000),
            "numpy_median_ms": ref_ms, "numpy_p90_ms": float(np.percentile(reference, 90) * 1000),
            "speedup_vs_numpy": ref_ms / ours_ms, "meets_target": ours_ms <= TARGET_MS,
            "queries_with_different_rows": mismatches}


def _print_table(results: list[dict]) -> None:
    print_table(["embeddings", "dim", "index median (ms)", "index p90 (ms)", "numpy median (ms)", "numpy / index",
                 f"≤ {TARGET_MS:.0f} ms"],
                [[f"{r['count']:,}", str(r["dim"]), f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                  f"{r['numpy_median_ms']:.2f}", f"{r['speedup_vs_numpy']:.2f}x", "yes" if r["meets_target"] else "no"]
                 for r in results])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries before every block")
    parser.add_argument("--block", type=int, default=25, help="queries timed in a row before switching method")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "benchmarks" / "search_latency.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy loads BLAS
        os.environ[variable] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for dim in args.dims:
        result = _measure(args.count, dim, args.queries, args.warmup, args.k, args.block)
        results.append(result)
        print(f"dim {dim}: index {result['median_ms']:.2f} ms, numpy {result['numpy_median_ms']:.2f} ms per query "
              f"({result['queries_with_different_rows']} queries with different rows)", flush=True)

    report = {
        "target_ms": TARGET_MS, "threads": args.threads, "results": results,
        "machine": machine_info(torch=torch.__version__, numpy=np.__version__),
    }
    _print_table(results)
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

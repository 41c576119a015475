#!/usr/bin/env python3
"""Approximate search on a million embeddings: recall@10 against latency for FAISS's IVF and HNSW.

The collection is synthetic, drawn to match our model: ``ch3-best`` embeds ``--fit`` ShapesWorld
pictures and their captions, and ``clip_tutorial.apps.ann.gaussian_like`` draws ``--count`` unit
image embeddings from a Gaussian with the mean and covariance of the image embeddings, and
``--queries`` text queries from that of the caption embeddings. (Embedding a million pictures
would give clusters of near-identical rows, where "the ten nearest" is not well defined.)

Measured, all on ``--threads`` threads:

- the exact answer of every query (``EmbeddingIndex``, float32), the ground truth;
- the median latency of one exact query at 10,000, 100,000 and ``--count`` rows, in float32 and
  with the float16 scan, to show how exact search grows with the collection;
- build time and bytes per vector of an IVF index (``--nlist`` cells) and an HNSW graph
  (``--m`` links, ``efConstruction`` ``--ef-construction``);
- for every ``nprobe`` (IVF) and ``efSearch`` (HNSW) in the sweeps: recall@10 over all queries
  (the share of the exact ten found) and the median latency of one query at a time over the
  first ``--timed`` queries.

Usage::

    python benchmarks/ann_search.py [--count 1000000] [--threads 2] [--output clip_tutorial/weights/grids/ann_search.json]

Chapter 5.7 reads the result with ``clip_tutorial.train.shipped_grid("ann_search")``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

from _report import ROOT, machine_info, print_table, write_report  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)


def _median_ms(search, queries, timed: int) -> float:
    for query in queries[-5:]:  # warm-up
        search(query)
    times = []
    for query in queries[:timed]:
        started = time.perf_counter()
        search(query)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _recall(rows, truth) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(rows.tolist(), truth.tolist())) / truth.numel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=200, help="queries timed one at a time per setting")
    parser.add_argument("--fit", type=int, default=20_000, help="ShapesWorld pictures the Gaussians are fitted to")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "clip_tutorial" / "weights" / "grids" / "ann_search.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import faiss
    import numpy as np
    import torch

    import clip_tutorial
    from clip_tutorial.apps.ann import FaissIndex, gaussian_like
    from clip_tutorial.apps.search import EmbeddingIndex
    from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    trained = clip_tutorial.load_or_train("ch3-best")
    world = clip_tutorial.ShapesWorld(args.fit, split="all", seed=500)
    images = encode_images(trained.model, world.images, batch_size=1024)
    texts = encode_texts(trained.model, trained.tokenizer, world.captions)
    data = gaussian_like(images, args.count, seed=1)
    queries = gaussian_like(texts, args.queries, seed=2)
    singles = [q[None] for q in queries]
    print(f"{args.count:,} synthetic embeddings of dimension {data.shape[1]}, {args.queries} queries", flush=True)

    exact_rows = []
    for size in sorted({size for size in (10_000, 100_000) if size < args.count} | {args.count}):
        for scan_dtype in ("float32", "float16"):
            index = EmbeddingIndex(data.shape[1], scan_dtype=scan_dtype)
            index.add(data[:size])
            ms = _median_ms(lambda q: index.search(q, k=10), singles, args.timed)
            exact_rows.append({"method": "exact", "scan_dtype": scan_dtype, "count": size, "median_ms": ms,
                               "bytes_per_vector": index.nbytes / size})
            print(f"exact {scan_dtype} at {size:,}: {ms:.2f} ms", flush=True)
            if (size, scan_dtype) == (args.count, "float32"):
                exact = index  # the whole collection, exact: the ground truth and the source of the indexes
    truth = exact.search(queries, k=10).rows

    rows, builds = [], []
    for kind, sweep, parameter in (("ivf", NPROBES, "nprobe"), ("hnsw", EF_SEARCHES, "ef_search")):
        started = time.perf_counter()
        index = FaissIndex.build(exact, kind, nlist=args.nlist, m=args.m, ef_construction=args.ef_construction)
        build_seconds = time.perf_counter() - started
        per_vector = index.nbytes / len(index)  # nbytes serialises the whole index: read it once
        builds.append({"method": kind, "build_seconds": build_seconds, "bytes_per_vector": per_vector,
                       "nlist": args.nlist if kind == "ivf" else None, "m": args.m if kind == "hnsw" else None,
                       "ef_construction": args.ef_construction if kind == "hnsw" else None})
        print(f"{kind}: built in {build_seconds:.1f} s, {per_vector:.1f} bytes per vector", flush=True)
        for value in sweep:
            options = {parameter: value}
            recall = _recall(index.search(queries, k=10, **options).rows, truth)
            ms = _median_ms(lambda q: index.search(q, k=10, **options), singles, args.timed)
            rows.append({"method": kind, "parameter": parameter, "value": value, "recall_at_10": recall,
                         "median_ms": ms})
            print(f"  {parameter}={value}: recall@10 {recall:.4f}, {ms:.3f} ms", flush=True)

    print_table(["method", "parameter", "recall@10", "median ms"],
                [[r["method"], f"{r['parameter']}={r['value']}", f"{r['recall_at_10']:.4f}", f"{r['median_ms']:.3f}"]
                 for r in rows])
    report = {
        "grid": "ann_search", "rows": rows, "exact": exact_rows, "builds": builds,
        "count": args.count, "dim": int(data.shape[1]), "queries": args.queries, "timed": args.timed,
        "data": f"gaussian_like of ch3-best's embeddings of {args.fit:,} ShapesWorld pictures (seed 500) "
                "and of their captions (queries)",
        "threads": args.threads, "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/ann_search.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(torch=torch.__version__, numpy=np.__version__, faiss=faiss.__version__),
    }
    if not args.no_write:
        write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

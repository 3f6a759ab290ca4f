"""A bounded load test of `dlab serve` on 127.0.0.1, with and without micro-batching.

python -m benchmarks serve [RUN_DIR] [--requests 2000] [--concurrency 16]

Without RUN_DIR it trains the demo MNIST CNN first (mnist_sample, offline, about a minute). Each
configuration starts a real `dlab serve` process; a client process-local asyncio loop keeps
`concurrency` requests in flight (one real MNIST digit each, as JSON) until `requests` are answered.
Reports status counts (any 5xx fails the run), p50/p90/p99 latency, throughput, and the mean
micro-batch size and the server process's peak resident memory, read back from its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import RECIPES, latency_summary, markdown_table, write_results

CONFIGS = [("no batching", 1), ("micro-batching (32, 5 ms)", 32)]


async def load(base: str, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < requests:
                body = bodies[issued % len(bodies)]
                issued += 1
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/predict", content=body, headers={"content-type": "application/json"}
                    )
                    statuses[response.status_code] += 1
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
    batches = float(metrics.split("dlab_batch_size_count ")[1].split()[0])
    inputs = float(metrics.split("dlab_batch_size_sum ")[1].split()[0])
    peak = float(metrics.split("\ndlab_peak_resident_memory_bytes ")[1].split()[0])
    return {
        **latency_summary(latencies, statuses, elapsed),
        "mean_batch": round(inputs / batches, 2),
        "server_peak_rss_mib": round(peak / 2**20, 1),  # model loading included
    }


def digits(count: int = 64) -> list[bytes]:
    import json

    from dlab.data.mnist import MnistSampleConfig, build_mnist_sample

    images, _ = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).test
    return [json.dumps({"inputs": image.tolist()}).encode() for image in images[:count]]


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve")
    parser.add_argument("run", nargs="?", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args(args)
    with tempfile.TemporaryDirectory() as runs:
        run_dir = options.run
        if run_dir is None:
            import dlab

            print("training the demo MNIST CNN to serve ...", flush=True)
            run_dir = dlab.train(RECIPES / "demo.yaml", runs_dir=runs, progress=False).path
        bodies = digits()
        rows = []
        from dlab.serve.process import serving

        for label, max_batch in CONFIGS:
            with serving(run_dir, "--max-batch", str(max_batch)) as base:
                asyncio.run(load(base, bodies, 100, options.concurrency))  # warm-up
                result = asyncio.run(load(base, bodies, options.requests, options.concurrency))
            rows.append({"server": label, "concurrency": options.concurrency, **result})
            print(markdown_table(rows[-1:], [c for c in rows[-1] if c != "errors"]), flush=True)
    if rows[0]["throughput_rps"]:
        rows[1]["speedup"] = round(rows[1]["throughput_rps"] / rows[0]["throughput_rps"], 2)
    path = write_results("serve", rows)
    print(markdown_table(rows, [c for c in rows[-1] if c != "errors"]))
    print(f"\nwritten to {path}")
    if any(row["5xx"] or row["ok"] != row["requests"] for row in rows):
        raise SystemExit("some requests failed: " + str([row["errors"] for row in rows]))

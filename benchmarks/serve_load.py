"""64 concurrent clients against three real `dlab serve` processes on 127.0.0.1: a text
classifier sent reviews of every length (they share micro-batches, padded together), an image
classifier sent MNIST digits, and a character GPT asked to generate.

python -m benchmarks serve_load [--clients 64] [--requests 2000] [--generations 200]

Each model is trained briefly first on real data (SST-2, MNIST sample, Tiny Shakespeare: about
two minutes in all; the point is the server, not the accuracy). Generation runs one at a time
behind a queue of 8: a client told 503 with Retry-After waits as told and asks again, and those
retries are counted apart. Reports final status counts (any 5xx fails the run), p50/p99 latency
of the final answers and throughput. Loopback only; bounded by the request counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter

import numpy as np

from benchmarks.common import (
    RECIPES,
    latency_summary,
    markdown_table,
    real_data_dir,
    write_results,
)

TRAIN = {
    "text": (
        "sst2_transformer",
        ["data.limit=3000", "train.epochs=1", "train.warmup_steps=10", "model.layers=1"],
    ),
    "image": ("demo", ["train.epochs=1"]),
    "gpt": ("shakespeare_char_gpt", ["train.max_steps=200", "model.layers=2"]),
}


async def load(base: str, route: str, bodies: list[bytes], requests: int, clients: int) -> dict:
    """Keep `clients` requests in flight until `requests` are answered (503s retried)."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    retried = 0
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal issued, retried
            while issued < requests:
                body = bodies[issued % len(bodies)]
                issued += 1
                started = time.perf_counter()
                while True:
                    try:
                        response = await client.post(
                            route, content=body, headers={"content-type": "application/json"}
                        )
                    except httpx.TransportError as exc:
                        statuses[type(exc).__name__] += 1
                        break
                    if response.status_code == 503 and "retry-after" in response.headers:
                        retried += 1
                        await asyncio.sleep(float(response.headers["retry-after"]))
                        continue
                    statuses[response.status_code] += 1
                    break
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {**latency_summary(latencies, statuses, elapsed), "busy_retries": retried}


def bodies(kind: str) -> tuple[str, list[bytes]]:
    """The route and the request bodies of one kind of model, from real data."""
    if kind == "image":
        from dlab.data.mnist import MnistSampleConfig, build_mnist_sample

        images, _ = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).test
        return "/predict", [json.dumps({"inputs": x.tolist()}).encode() for x in images[:64]]
    if kind == "text":
        rows = (real_data_dir() / "sst2" / "stsa.binary.dev").read_text().splitlines()
        texts = sorted((r[2:] for r in rows if r[:2] in ("0 ", "1 ")), key=len)  # 1-50+ words
        chosen = [texts[i] for i in np.linspace(0, len(texts) - 1, 64).astype(int)]
        return "/predict", [json.dumps({"text": t}).encode() for t in chosen]
    prompts = ["ROMEO:", "First Citizen:\n", "", "KING HENRY:\nWhat"]
    return "/generate", [
        json.dumps({"prompt": p, "max_new_tokens": 32, "seed": i}).encode()
        for i, p in enumerate(prompts)
    ]


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve_load")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--generations", type=int, default=200)
    options = parser.parse_args(args)
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import dlab
    from dlab.serve.process import serving

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for kind, (recipe, overrides) in TRAIN.items():
            print(f"training {recipe} briefly to serve ...", flush=True)
            run = dlab.train(
                RECIPES / f"{recipe}.yaml", overrides, runs_dir=runs, progress=False
            )
            route, payloads = bodies(kind)
            count = options.generations if kind == "gpt" else options.requests
            with serving(run.path) as base:
                asyncio.run(load(base, route, payloads, 32, 8))  # warm-up
                result = asyncio.run(load(base, route, payloads, count, options.clients))
            rows.append({"model": kind, "route": route, "clients": options.clients, **result})
            print(markdown_table(rows[-1:], [c for c in rows[-1] if c != "errors"]), flush=True)
    path = write_results("serve_load", rows)
    print(markdown_table(rows, [c for c in rows[-1] if c != "errors"]))
    print(f"\nwritten to {path}")
    if any(row["5xx"] or row["ok"] != row["requests"] for row in rows):
        raise SystemExit("some requests failed: " + str([row["errors"] for row in rows]))

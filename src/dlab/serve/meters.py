"""The server's Prometheus metrics, in a registry of its own (one per app): requests, latency
and micro-batch sizes, with the process's CPU time and memory (current, and the peak resident
size since it started, which is what a machine for this model must hold)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from dlab import runtime


class Meters:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "dlab_requests", "HTTP requests", ["route", "status"], registry=registry
        )
        self.latency = Histogram(
            "dlab_request_seconds",
            "request latency",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch_sizes = Histogram(
            "dlab_batch_size",
            "inputs per forward pass",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, ...
        peak = Gauge(
            "dlab_peak_resident_memory_bytes",
            "the server process's peak resident memory since it started (Linux's VmHWM)",
            registry=registry,
        )
        peak.set_function(lambda: (runtime.resident_peak_mib() or 0.0) * 2**20)

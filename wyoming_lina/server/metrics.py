"""Prometheus metrics of both doors (Wyoming and the studio's HTTP API), through prometheus_client.

Counted per finished request: requests and errors by code, time to first audio and real-time
factor (seconds of work per second of audio). Read at each scrape: rows in the engine's
batch, sentences waiting for it, GPU memory. One registry per server, so tests can hold two.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)


class EngineGauges:
    """A collector reading the engine at scrape time (``read()`` -> {name: value})."""

    def __init__(self, read: Callable[[], dict[str, float]]):
        self.read = read

    def collect(self):
        values = self.read()
        help_text = {
            "lina_batch_rows": "utterances being generated right now",
            "lina_queue_depth": "sentences waiting for the engine",
            "lina_gpu_memory_bytes": "GPU memory held by PyTorch (allocated)",
        }
        for name, text in help_text.items():
            if name in values:
                family = GaugeMetricFamily(name, text)
                family.add_metric([], float(values[name]))
                yield family


def engine_reader(engine) -> Callable[[], dict[str, float]]:
    """What EngineGauges reads from an Engine (rows in the batch, the waiting queue, GPU memory)."""

    def read() -> dict[str, float]:
        rows, waiting = engine.load
        values = {"lina_batch_rows": rows, "lina_queue_depth": waiting}
        device = engine.model.device
        if device.type == "cuda":
            import torch

            values["lina_gpu_memory_bytes"] = torch.cuda.memory_allocated(device)
        return values

    return read


class ServerMetrics:
    def __init__(self, engine_read: Callable[[], dict[str, float]] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lina_requests", "speech requests finished", ["door"], registry=r)
        self.errors = Counter(
            "lina_request_errors", "speech requests that failed, by error code", ["door", "code"], registry=r
        )
        self.first_audio = Histogram(
            "lina_time_to_first_audio_seconds",
            "from request to its first audio",
            ["door"],
            buckets=FIRST_AUDIO_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "lina_real_time_factor", "seconds taken per second of audio", ["door"], buckets=RTF_BUCKETS, registry=r
        )
        self.audio = Counter("lina_audio_seconds", "seconds of audio spoken", ["door"], registry=r)
        self.http = Counter("lina_http_responses", "studio HTTP responses by status code", ["status"], registry=r)
        if engine_read is not None:
            r.register(EngineGauges(engine_read))

    def request_finished(
        self, door: str, *, error: str | None, first_audio: float | None, audio_seconds: float, elapsed: float
    ) -> None:
        self.requests.labels(door).inc()
        if error:
            self.errors.labels(door, error).inc()
            return
        if first_audio is not None:
            self.first_audio.labels(door).observe(first_audio)
        if audio_seconds > 0:
            self.audio.labels(door).inc(audio_seconds)
            self.rtf.labels(door).observe(elapsed / audio_seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""Batched generation: all GPU work at serving time goes through here."""

from .decoding import StreamingDecoder, streaming_config_for
from .job import GenerationJob, JobHandle, JobStats
from .loop import Engine
from .sampling import SamplingOptions, sample_tokens
from .settings import EngineSettings

__all__ = [
    "Engine",
    "EngineSettings",
    "GenerationJob",
    "JobHandle",
    "JobStats",
    "SamplingOptions",
    "StreamingDecoder",
    "sample_tokens",
    "streaming_config_for",
]

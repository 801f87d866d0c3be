"""The runner's model backends, each wrapped so that the benches can time the model calls.

The benches run the stages through :mod:`pipelines.runner`; :class:`TimedBackends` hands the
runner the same backends as :class:`ModelBackends`, behind proxies that add up the time spent
in each stage's model methods.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.runner import ModelBackends

# Stage -> the backend methods that run a model.
TIMED_METHODS: dict[str, tuple[str, ...]] = {
    "faces": ("detect", "detect_batch"), "asd": ("probabilities", "shifted_scores", "probabilities_many", "shifted_scores_many"),
    "flame": ("predict",), "captions": ("caption",)}
# The speech stage's backend holds one model per field.
SPEECH_METHODS: dict[str, tuple[str, ...]] = {
    "activity": ("activity",), "transcriber": ("transcribe", "transcribe_clip", "detect_language"), "identifier": ("identify",)}


class TimedCalls:
    """Proxy that adds the time spent in the named methods of ``inner``; all else passes through."""

    def __init__(self, inner: Any, methods: Iterable[str]):
        self._inner = inner
        self._methods = frozenset(methods)
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._methods:
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


class TimedBackends(ModelBackends):
    """:class:`ModelBackends` whose backends come behind :class:`TimedCalls` proxies, one proxy
    per stage for the life of this object (a stage without its model installed gets None)."""

    def __init__(self, config: PipelineConfig):
        super().__init__(config)
        self._timed: dict[str, Any] = {}
        self.timers: dict[str, list[TimedCalls]] = {}

    def get(self, name: str, config: PipelineConfig | None = None) -> Any:
        if name not in self._timed:
            self._timed[name] = self._wrap(name, super().get(name, config))
        return self._timed[name]

    def _wrap(self, name: str, backend: Any) -> Any:
        if backend is None:
            self.timers[name] = []
            return None
        if name == "speech":  # a copy: the shared backend the runner caches stays unwrapped
            proxies = {field: TimedCalls(getattr(backend, field), methods)
                       for field, methods in SPEECH_METHODS.items() if getattr(backend, field) is not None}
            self.timers[name] = list(proxies.values())
            return dataclasses.replace(backend, **proxies)
        proxy = TimedCalls(backend, TIMED_METHODS[name])
        self.timers[name] = [proxy]
        return proxy

    def model_time(self, name: str) -> tuple[float, int]:
        """Seconds spent in the stage's model calls and how many calls, since the last reset."""
        timers = self.timers.get(name, [])
        return sum(t.seconds for t in timers), sum(t.calls for t in timers)

    def reset(self) -> None:
        for timers in self.timers.values():
            for timer in timers:
                timer.reset()

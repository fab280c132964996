"""The scorer interface the worker, the service, replay and the CLI all use.

A scorer turns ScoreRequests (frames + the audio that covers them and the offset-search margin)
into LipSyncScores. A *stream* is the per-session state a scorer keeps between calls (cached
per-frame embeddings), so consecutive blocks of one session cost only their new frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from worker.scoring.types import LipSyncScore, ScoreRequest


@runtime_checkable
class StreamState(Protocol):
    """Opaque per-session cache owned by a scorer. ``forget_before(frame_index)`` bounds it."""

    def forget_before(self, frame_index: int) -> None: ...

    def cached_frames(self) -> int: ...


@runtime_checkable
class Scorer(Protocol):
    @property
    def name(self) -> str:
        """``<model name>@<version>`` or ``heuristic@<version>``."""
        ...

    @property
    def search_margin_ms(self) -> float:
        """Audio needed on each side of a job's frames (offset search + encoder context)."""
        ...

    def new_stream(self) -> StreamState: ...

    def score(self, request: ScoreRequest, stream: StreamState | None = None) -> LipSyncScore: ...

    def score_batch(
        self,
        requests: Sequence[ScoreRequest],
        streams: Sequence[StreamState | None] | None = None,
    ) -> list[LipSyncScore]:
        """Score many jobs (possibly from many sessions) in one batched pass; same results as
        calling ``score`` on each."""
        ...

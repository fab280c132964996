"""Judging scored jobs (LipSyncScores) against a known true offset. Pure: no torch, no I/O.

Which jobs count: every job except those labelled SILENCE. SILENCE is a rule on the audio's RMS
(not the model's choice), and a silent job makes no claim about the offset. Any other job without
an offset (NO_FACE, LOW_QUALITY, ...) counts as a miss, so a scorer cannot improve its accuracy
by declining hard jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.evaluation.metrics import within_frames
from worker.scoring.types import Label, LipSyncScore

DEFAULT_CONFIDENT = 0.5  # "confident": confidence >= this (confident-and-wrong share)


@dataclass
class JobSample:
    """One judged job: what the signal said and whether its offset was right."""

    score: float | None
    confidence: float
    offset_ms: float | None
    hit: bool
    label: str


@dataclass
class JobTally:
    """Running counts over judged jobs (windows or blocks) of one kind."""

    confident_threshold: float = DEFAULT_CONFIDENT
    n_total: int = 0
    n_silence: int = 0
    n_null_other: int = 0  # no offset although not silent: counted as misses
    hits: int = 0
    confident: int = 0
    confident_wrong: int = 0
    confidence_sum: float = 0.0
    samples: list[JobSample] = field(default_factory=list, repr=False)

    @property
    def n_judged(self) -> int:
        return self.n_total - self.n_silence

    def add(self, job: LipSyncScore, true_ms: float, frame_ms: float) -> None:
        self.n_total += 1
        if job.label is Label.SILENCE:
            self.n_silence += 1
            return
        hit = within_frames(job.offset_ms, true_ms, frame_ms)
        if job.offset_ms is None:
            self.n_null_other += 1
        self.hits += hit
        self.confidence_sum += job.confidence
        if job.confidence >= self.confident_threshold:
            self.confident += 1
            self.confident_wrong += not hit
        self.samples.append(JobSample(job.score, job.confidence, job.offset_ms, hit, job.label.value))

    def add_all(self, jobs: list[LipSyncScore], true_ms: float, frame_ms: float) -> None:
        for j in jobs:
            self.add(j, true_ms, frame_ms)

    def merge(self, other: JobTally) -> None:
        self.n_total += other.n_total
        self.n_silence += other.n_silence
        self.n_null_other += other.n_null_other
        self.hits += other.hits
        self.confident += other.confident
        self.confident_wrong += other.confident_wrong
        self.confidence_sum += other.confidence_sum
        self.samples += other.samples

    def as_dict(self) -> dict:
        n = self.n_judged
        return {
            "n": n, "hits": self.hits, "rate": share(self.hits, n),
            "silence_excluded": self.n_silence, "no_offset_counted_wrong": self.n_null_other,
            "mean_confidence": share(self.confidence_sum, n),
            f"confident_share(conf>={self.confident_threshold})": share(self.confident, n),
            "confident_and_wrong_share": share(self.confident_wrong, n),
            # of the confident windows, how many are wrong: a small share of confident-and-wrong
            # can still be every confident window (a review: under the bar, 11 of 11)
            "confident": self.confident, "wrong_if_confident": share(self.confident_wrong, self.confident),
        }


def share(k: float, n: int) -> float | None:
    """k / n to 4 places; None with nothing to count (not 0)."""
    return None if n == 0 else round(k / n, 4)

"""Shared fixtures. Torch runs single-threaded in tests: on a shared 2-core machine two OpenMP
threads spin against each other and run several times slower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def dev_clips_dir() -> Path:
    d = SHARED_DATA / "dev-clips"
    if not d.is_dir():
        pytest.skip(f"SKIPPED LOUDLY: {d} is absent; real-footage tests need ../shared/data/dev-clips")
    return d

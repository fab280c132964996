"""worker.windowing.resample: a stream's chunks resampled one by one add up to the stream
resampled whole (torchaudio's band-limited resampler), whatever the chunk sizes and rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from worker.windowing.buffers import AudioBuffer
from worker.windowing.resample import chunk_contribution, core_start


@pytest.mark.parametrize("rate, sizes", [
    (48_000, [960, 480, 1024, 9]),  # 9: cores of 3 samples
    (44_100, [882, 1024, 100]),  # 1024: chunks start between two 16 kHz samples
    (22_050, [512]), (8_000, [160, 77]), (32_000, [640]),
])
def test_the_chunks_spills_make_up_the_stream_resampled_whole(rate, sizes):
    x = (0.3 * np.random.default_rng(rate).standard_normal(rate)).astype(np.float32)
    whole = torchaudio.functional.resample(torch.from_numpy(x), rate, 16_000).numpy()
    for size in sizes:
        buf = AudioBuffer()
        for s in range(0, x.shape[0], size):
            core, c0, spill = chunk_contribution(x[s: s + size], s, rate, 16_000)
            assert c0 == core_start(s, rate, 16_000) and core.shape[0] == core_start(s + size, rate, 16_000) - c0 \
                or s + size > x.shape[0]
            assert buf.add(c0, core, s, spill)
        got, filled = buf.extract(0, whole.shape[0])
        assert filled.all() and np.abs(got - whole).max() < 3e-5, (rate, size)


def test_a_missing_chunk_reads_as_silence_and_a_duplicate_adds_nothing():
    rate, size = 48_000, 960
    x = (0.3 * np.random.default_rng(1).standard_normal(rate // 2)).astype(np.float32)
    gapped = x.copy()
    gapped[5 * size: 6 * size] = 0.0  # chunk 5 never comes
    want = torchaudio.functional.resample(torch.from_numpy(gapped), rate, 16_000).numpy()
    buf = AudioBuffer()
    for k, s in enumerate(range(0, x.shape[0], size)):
        if k == 5:
            continue
        core, c0, spill = chunk_contribution(x[s: s + size], s, rate, 16_000)
        buf.add(c0, core, s, spill)
        if k == 3:
            assert not buf.add(c0, core, s, spill)  # delivered twice: its spills are not added again
    got, filled = buf.extract(0, want.shape[0])
    c5, c6 = core_start(5 * size, rate, 16_000), core_start(6 * size, rate, 16_000)
    assert not filled[c5:c6].any() and (got[c5:c6] == 0).all()  # missing: zeros, marked so
    assert np.abs(got[filled] - want[filled]).max() < 3e-5  # the rest as the stream with silence there
    cut = c6 + 100  # inside chunk 6's core: chunk 7's spill into it must stay
    buf.drop_before(cut)
    after, _ = buf.extract(c6, c6 + 400)
    assert np.array_equal(after, got[c6: c6 + 400])

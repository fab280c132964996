"""A device or bundle the user names that cannot be used is a one-line error, found before any
tracking, and never silently replaced by the heuristic scorer (which stands in for a broken
default bundle only)."""

import subprocess

import pytest
import torch

from tests.support.cli import one_error_line as _one_line
from worker.scoring.scorer import DeviceError, select_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_select_device_takes_auto_and_cpu():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name, match", [("gpu0", "unknown device"), ("mps", "cpu or cuda"), ("cuda:99", "cuda")])
def test_select_device_refuses_what_it_cannot_use(name, match):
    with pytest.raises(DeviceError, match=match):
        select_device(name)


@no_cuda
def test_cuda_without_a_gpu_is_an_error_not_the_heuristic():
    from worker.scoring.loader import load_scorer

    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_scorer(None, device="cuda")  # the default bundle, whose failures may fall back
    # the bundled model (with its narrowband companion), not the heuristic
    assert type(load_scorer(None, device="cpu")).__name__ == "BandRoutedScorer"


@pytest.fixture
def clip(dev_clips_dir) -> str:
    return str(dev_clips_dir / "grid_bbaf2n.mpg")  # probed only: never tracked here


@pytest.fixture
def no_tracking(monkeypatch):
    from worker.tracking import MouthTracker

    def refuse(*_a, **_k):
        raise AssertionError("tracked before the bundle and the device were checked")

    monkeypatch.setattr(MouthTracker, "track_faces_chunks", refuse)  # every tracking path


def test_score_with_a_missing_bundle_is_one_line_before_tracking(capsys, tmp_path, clip, no_tracking):
    line = _one_line(capsys, ["score", clip, "--bundle", str(tmp_path / "nope")])
    assert "cannot load bundle" in line and "manifest.json" in line


@no_cuda
def test_score_on_cuda_without_a_gpu_is_one_line_before_tracking(capsys, clip, no_tracking):
    assert "CUDA is not available" in _one_line(capsys, ["score", clip, "--device", "cuda"])


def test_bench_with_a_missing_bundle_is_one_line_not_the_heuristics_numbers(capsys, tmp_path):
    assert "cannot load bundle" in _one_line(capsys, ["bench", "--bundle", str(tmp_path / "nope"), "--blocks", "10"])


def test_cuda_without_a_gpu_is_one_line_in_a_subprocess(clip):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import sys

    proc = subprocess.run([sys.executable, "-m", "worker.cli", "score", clip, "--device", "cuda"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        "error: device 'cuda': CUDA is not available here (use auto or cpu)"]

"""What a command pays before it does its work: `sync-scorer` builds every subcommand's parser,
so building it must not import the heavy libraries only some commands need, and face tracking
must not pull matplotlib through mediapipe's package __init__. Checked by what gets imported
(in a fresh interpreter), not by timing: this machine is shared and noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchaudio", "scipy", "cv2", "mediapipe", "matplotlib", "confluent_kafka", "grpc")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_heavy_library():
    # before: torch (evaluation help text imported its modules) and scipy (worker.synth's
    # package __init__), 2.7 s for `sync-scorer --help` or a mistyped option
    assert _imported_after("import worker.cli as c; c.build_parser()") == []


def test_a_bad_argument_is_one_line_without_loading_torch():
    out = subprocess.run([sys.executable, "-m", "worker.cli", "score", "x.mp4", "--block-frames", "99"],
                         check=False, cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "--block-frames" in out.stderr
    code = "from worker.cli import main\nassert main(['score', 'x.mp4', '--block-frames', '99']) != 0"
    assert _imported_after(code) == []


def test_synth_names_still_resolve_from_the_package():
    from worker.synth import SynthClip, SynthOptions, generate_clip, write_clip

    assert SynthOptions.__name__ == "SynthOptions" and callable(generate_clip) and callable(write_clip)
    assert SynthClip.__module__ == "worker.synth.clip"
    with pytest.raises(AttributeError):
        import worker.synth

        worker.synth.no_such_name  # noqa: B018


def test_tracking_loads_mediapipe_solutions_without_matplotlib():
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    code = (
        "import sys\n"
        "from worker.tracking.tracker import _solution\n"
        "fm = _solution('face_mesh'); fd = _solution('face_detection')\n"
        "mesh = fm.FaceMesh(static_image_mode=True); mesh.close()\n"
        "assert 'matplotlib' not in sys.modules\n"
        "import mediapipe as mp\n"  # a later plain import finds the same solution modules
        "assert mp.solutions.face_mesh is fm and mp.solutions.face_detection is fd\n"
    )
    assert "matplotlib" not in _imported_after(code)


def test_tracking_uses_an_already_imported_mediapipe():
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    code = ("import mediapipe as mp\nfrom worker.tracking.tracker import _solution\n"
            "assert _solution('face_mesh') is mp.solutions.face_mesh\n")
    assert "mediapipe" in _imported_after(code)

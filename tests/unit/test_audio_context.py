"""The audio encoder's wider view (``make_model --audio-context-layers N``): residual dilated blocks
that widen its receptive field by two frames a side each, with the bundle's audio context padding
following, and old bundles' weights loading unchanged."""

import json

import pytest
import torch

from model_store.architectures import build
from model_store.architectures.syncnet_lite import audio_context_frames

BASE = {"video_channels": [8, 8, 16, 16]}


def _reach_frames(params: dict) -> int:
    """Frames on each side of a grid position that move its audio embedding (an impulse probe)."""
    torch.manual_seed(0)
    enc = build("syncnet_lite_v1", params).eval().audio_encoder
    mel = torch.zeros(1, 40, 4 * 41)
    with torch.no_grad():
        base = enc(mel)
        mel[0, :, 4 * 20 + 1] = 5.0  # one mel step inside grid position 20
        moved = (enc(mel) - base).abs().sum(1)[0] > 1e-6
    where = moved.nonzero().flatten()
    return int(max(20 - where.min(), where.max() - 20))


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_each_context_layer_widens_the_view_by_two_frames_and_the_padding_covers_it(layers):
    params = {**BASE, "audio_context_layers": layers} if layers else BASE
    reach = _reach_frames(params)
    assert reach == 3 + 2 * layers
    assert audio_context_frames(layers) > reach


def test_a_network_without_context_layers_has_the_old_weights_layout():
    old_keys = set(build("syncnet_lite_v1", BASE).state_dict())
    wide = set(build("syncnet_lite_v1", {**BASE, "audio_context_layers": 2}).state_dict())
    assert old_keys < wide
    assert all(k.startswith("audio_encoder.context.") for k in wide - old_keys)


def test_make_model_records_the_wider_audio_view_and_its_padding(tmp_path):
    from model_store.training.make_model import main
    from worker.scoring.loader import load_scorer

    out = tmp_path / "wide"
    assert main(["--no-real", "--synth-clips", "4", "--steps", "2", "--batch-size", "4", "--finetune-steps", "0",
                 "--audio-context-layers", "2", "--version", "0.0.1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch_params"]["audio_context_layers"] == 2
    assert manifest["input"]["audio"]["context_frames"] == audio_context_frames(2)
    scorer = load_scorer(out, device="cpu")
    assert scorer.audio_ctx == audio_context_frames(2)
    with pytest.raises(SystemExit, match="audio-context-layers"):
        main(["--no-real", "--audio-context-layers", "-1", "--out", str(tmp_path / "bad")])
    # the frozen TorchScript encoders (the CPU default) score as the eager modules do
    from dataclasses import replace

    from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
    from worker.synth import SynthOptions, generate_clip

    clip = generate_clip(5, 1.5, 40.0, SynthOptions())
    req = ScoreRequest(Kind.WINDOW, FrameSpan(clip.frames[:25], clip.fps, 0), AudioSpan(clip.audio, 16000, 0))
    eager = load_scorer(out, config=replace(scorer.config, cpu_jit=False), device="cpu")
    assert scorer.score(req).curve == pytest.approx(eager.score(req).curve, abs=1e-4)

"""The frame CNN's capacity (``make_model --video-channels W,.. --video-blocks N``): residual blocks
after the stride-2 stages, widths of the recipe's choosing, old bundles' weights loading unchanged,
and the inference path (batch norms folded, TorchScript-frozen) scoring as the eager network."""

import json
from dataclasses import replace

import pytest
import torch

from model_store.architectures import build
from model_store.architectures.syncnet_lite import fuse_for_inference

BASE = {"video_channels": [8, 8, 16, 16]}


def test_the_blocks_follow_every_stride_two_stage_but_the_last():
    def convs(params):
        enc = build("syncnet_lite_v1", params).frame_encoder
        return [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]

    assert len(convs(BASE)) == 4  # the stem and three stride-2 stages: the bundles up to 1.7.0
    deep = convs({**BASE, "video_blocks_per_stage": 2})
    # 2 stages x 2 blocks x 2 convs, at the stage's width, stride 1
    extra = [c for c in deep if c.stride == (1, 1) and c.kernel_size == (3, 3)]
    assert len(deep) == 12 and len(extra) == 8
    assert sorted({c.in_channels for c in extra}) == [8, 16]


def test_the_shipped_bundle_loads_into_the_plain_stack():
    from model_store.bundle import load_bundle

    bundle, state = load_bundle()
    assert "video_blocks_per_stage" not in bundle.arch_params
    build(bundle.architecture, bundle.arch_params).load_state_dict(state)


def test_the_blocks_change_the_features_and_keep_their_size():
    torch.manual_seed(0)
    plain = build("syncnet_lite_v1", BASE).eval()
    torch.manual_seed(0)
    deep = build("syncnet_lite_v1", {**BASE, "video_blocks_per_stage": 1}).eval()
    frames = torch.rand(5, 1, 96, 96)
    with torch.no_grad():
        a, b = plain.frame_features(frames), deep.frame_features(frames)
    assert a.shape == b.shape == (5, plain.frame_feature_dim)
    assert not torch.allclose(a, b)


def test_folding_the_batch_norms_keeps_a_deep_frame_cnns_outputs():
    torch.manual_seed(1)
    model = build("syncnet_lite_v1", {"video_channels": [8, 12, 16, 24], "video_blocks_per_stage": 1})
    # train a few batches so the norms' running statistics are not the identity
    model.train()
    for _ in range(3):
        model.frame_features(torch.rand(16, 1, 96, 96) * 2)
    model.eval()
    frames = torch.rand(6, 1, 96, 96)
    with torch.no_grad():
        before = model.frame_features(frames)
        fused = fuse_for_inference(model)
        after = fused.frame_features(frames)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.frame_encoder.modules())
    assert after == pytest.approx(before, abs=1e-4)


def test_make_model_records_the_frame_cnn_and_the_scorer_runs_it(tmp_path):
    from model_store.training.make_model import main
    from worker.scoring.loader import load_scorer
    from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
    from worker.synth import SynthOptions, generate_clip

    out = tmp_path / "deep"
    assert main(["--no-real", "--synth-clips", "4", "--steps", "2", "--batch-size", "4", "--finetune-steps", "0",
                 "--video-channels", "8,12,16,24", "--video-blocks", "1", "--version", "0.0.1",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch_params"]["video_channels"] == [8, 12, 16, 24]
    assert manifest["arch_params"]["video_blocks_per_stage"] == 1
    scorer = load_scorer(out, device="cpu")
    clip = generate_clip(5, 1.5, 40.0, SynthOptions())
    req = ScoreRequest(Kind.WINDOW, FrameSpan(clip.frames[:25], clip.fps, 0), AudioSpan(clip.audio, 16000, 0))
    eager = load_scorer(out, config=replace(scorer.config, cpu_jit=False), device="cpu")
    assert scorer.score(req).curve == pytest.approx(eager.score(req).curve, abs=1e-4)
    # --from-bundle takes the architecture from the bundle, whatever the command line says
    again = tmp_path / "again"
    assert main(["--no-real", "--synth-clips", "4", "--finetune-steps", "0", "--from-bundle", str(out), "--version", "0.0.2",
                 "--out", str(again)]) == 0
    assert json.loads((again / "manifest.json").read_text())["arch_params"] == manifest["arch_params"]


@pytest.mark.parametrize("argv, message", [
    (["--video-blocks", "-1"], "--video-blocks"),
    (["--steps", "0"], "--steps"),
])
def test_bad_capacity_or_step_arguments_exit_with_one_line(tmp_path, argv, message):
    from model_store.training.make_model import main

    with pytest.raises(SystemExit, match=message):
        main(["--no-real", *argv, "--out", str(tmp_path / "bad")])


@pytest.mark.parametrize("text", ["32", "32,x", "0,8"])
def test_bad_widths_are_an_argparse_error(tmp_path, text, capsys):
    from model_store.training.make_model import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--no-real", "--video-channels", text, "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--video-channels" in err and "Traceback" not in err


@pytest.mark.parametrize("steps", [1, 2, 10, 20, 30, 1800])
def test_the_schedule_takes_any_step_count_and_peaks_after_its_warm_up(steps):
    from model_store.training.train import one_cycle

    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    sched = one_cycle(opt, 1e-3, steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(rates) <= 1e-3 + 1e-12
    if steps >= 20:
        assert rates[0] < rates[int(0.05 * steps) + 1] and rates[-1] < 0.05 * max(rates)

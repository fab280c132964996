"""Training losses on hand-made similarity tensors (no model, no data)."""

import pytest
import torch

from model_store.training.data import Batch
from model_store.training.train import GlobalThreshold


def _batch(labels, clip_ids):
    b = len(labels)
    return Batch(frames=torch.zeros(b, 1, 1, 1), frame_ok=torch.ones(b, 1, dtype=torch.bool),
                 mel=torch.zeros(b, 1, 1), audio_ok=torch.ones(b, 1, dtype=torch.bool),
                 label=torch.tensor(labels), clip_ids=clip_ids)


def test_global_threshold_loss_falls_when_matched_windows_beat_every_mismatched_peak():
    # c[i, j, k]: window i's frames with window j's audio at offset k
    batch = _batch([1, 2, 0], [0, 1, 2])
    base = torch.full((3, 3, 3), 0.1)
    good, bad = base.clone(), base.clone()
    for i, k in enumerate([1, 2, 0]):
        good[i, i, k] = 0.8
        bad[i, i, k] = 0.15
    # a mismatched pair whose best offset is high: the peak the scorer would pick
    bad[0, 2, 1] = 0.7
    head = GlobalThreshold()
    assert float(head.loss(good, batch)) < float(head.loss(bad, batch))


def test_global_threshold_ignores_pairs_of_one_clip_and_invalid_pairs():
    batch = _batch([0, 0], [5, 5])  # two windows of the same clip: no mismatched pair
    c = torch.full((2, 2, 1), 0.5)
    assert float(GlobalThreshold().loss(c, batch)) == 0.0
    batch = _batch([0, 0], [5, 6])
    c = torch.full((2, 2, 1), -1.0)  # too few valid pairs everywhere (batch_loss's sentinel)
    assert float(GlobalThreshold().loss(c, batch)) == 0.0


def test_make_model_runs_a_fine_tuning_stage_and_records_it(tmp_path):
    """The whole `make model` path at toy size (synthetic clips only, a few steps): the bundle loads,
    and its manifest says how the fine-tuning stage ran."""
    import json

    from model_store.training.make_model import main
    from worker.scoring.loader import load_scorer

    out = tmp_path / "bundle"
    assert main(["--no-real", "--synth-clips", "4", "--steps", "2", "--batch-size", "4", "--finetune-steps", "2",
                 "--finetune-sources", "all", "--version", "0.0.1", "--out", str(out)]) == 0
    training = json.loads((out / "manifest.json").read_text())["training"]
    ft = training["finetune"]
    assert ft["config"]["steps"] == 2 and ft["config"]["lr"] == 3e-4 and ft["clips"] == 4
    assert [h["step"] for h in ft["history"]] == [2]
    assert load_scorer(out, device="cpu").name == "syncnet-lite@0.0.1"


def test_fine_tuning_with_the_audio_side_frozen_changes_only_the_video_side(tmp_path):
    from model_store.bundle import load_bundle
    from model_store.training.make_model import main

    base, tuned = tmp_path / "base", tmp_path / "tuned"
    common = ["--no-real", "--synth-clips", "4", "--batch-size", "4", "--version", "0.0.1"]
    assert main([*common, "--steps", "2", "--out", str(base)]) == 0
    assert main([*common, "--from-bundle", str(base), "--finetune-steps", "3", "--finetune-lr", "1e-2",
                 "--finetune-sources", "all", "--finetune-freeze", "audio", "--out", str(tuned)]) == 0
    (_, a), (manifest, b) = load_bundle(base), load_bundle(tuned)
    assert manifest.training["finetune"]["frozen"] == "audio"
    learned = [k for k in a if k.endswith((".weight", ".bias"))]
    audio = [k for k in learned if k.startswith("audio_encoder.")]
    video = [k for k in learned if k.startswith(("frame_encoder.", "video_head."))]
    assert audio and video
    assert all(bool((a[k] == b[k]).all()) for k in audio), "a frozen weight moved"
    assert any(not bool((a[k] == b[k]).all()) for k in video), "the video side did not learn"


def test_distillation_loss_is_zero_when_the_student_agrees_and_pulls_it_towards_the_teacher():
    from model_store.training.train import distill_loss

    torch.manual_seed(0)
    teacher = torch.rand(4, 4, 5) * 2 - 1
    scale = torch.tensor(10.0)
    assert float(distill_loss(teacher.clone(), teacher, scale)) == pytest.approx(0.0, abs=1e-6)
    student = (torch.rand(4, 4, 5) * 2 - 1).requires_grad_(True)
    before = float(distill_loss(student, teacher, scale))
    assert before > 0.01
    distill_loss(student, teacher, scale).backward()
    with torch.no_grad():
        stepped = student - 0.01 * student.grad
    assert float(distill_loss(stepped, teacher, scale)) < before


def test_frame_distillation_matches_each_frames_offsets_and_ignores_invalid_pairs():
    from model_store.training.train import frame_distill_loss

    torch.manual_seed(0)
    teacher = torch.rand(3, 6, 5) * 2 - 1
    ok = torch.ones(3, 6, 5, dtype=torch.bool)
    ok[0, 0, :4] = False  # one valid offset: the frame has no distribution to match
    ok[1, :, 0] = False  # an offset past the audio's end
    scale = torch.tensor(10.0)
    student = teacher.clone()
    # what an invalid pair holds does not matter
    student[1, :, 0] = 5.0
    student[0, 0, :4] = -3.0
    assert float(frame_distill_loss(student, teacher, ok, scale)) == pytest.approx(0.0, abs=1e-6)
    student = (torch.rand(3, 6, 5) * 2 - 1).requires_grad_(True)
    before = frame_distill_loss(student, teacher, ok, scale)
    assert float(before) > 0.01
    before.backward()
    assert float(student.grad[1, :, 0].abs().max()) == 0.0 and float(student.grad[0, 0].abs().max()) == 0.0
    with torch.no_grad():
        stepped = student - 0.01 * student.grad
    assert float(frame_distill_loss(stepped, teacher, ok, scale)) < float(before)
    # no frame with two valid offsets: zero, and still part of the graph
    none_ok = torch.zeros(3, 6, 5, dtype=torch.bool)
    empty = frame_distill_loss(student, teacher, none_ok, scale)
    assert float(empty) == 0.0 and empty.requires_grad


def test_member_state_takes_one_network_out_of_an_ensemble():
    from model_store.architectures import build
    from model_store.architectures.ensemble import ensemble_state, member_state

    params = {"video_channels": [8, 8, 16, 16]}
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        nets.append(build("syncnet_lite_v1", params).state_dict())
    joined = ensemble_state(nets)
    for i, net in enumerate(nets):
        got = member_state(joined, i)
        assert set(got) == set(net) - {"logit_scale"}
        assert all(torch.equal(got[k], net[k]) for k in got)


def test_make_model_distils_from_an_ensemble_teacher_and_starts_from_its_first_network(tmp_path):
    """Toy size: a one-network bundle joined twice into a teacher; a student starts from the teacher's
    first network, trains with the distillation term, and the manifest names both."""
    import json

    from model_store.architectures.ensemble import ensemble_state
    from model_store.bundle import load_bundle, save_bundle
    from model_store.training.ensemble import join_manifests
    from model_store.training.make_model import main
    from worker.scoring.loader import load_scorer

    common = ["--no-real", "--synth-clips", "4", "--batch-size", "4", "--version", "0.0.1"]
    assert main([*common, "--steps", "2", "--finetune-steps", "0", "--out", str(tmp_path / "m")]) == 0
    members = [load_bundle(tmp_path / "m")] * 2
    # joined as model_store.training.ensemble does, without its calibration refit (real clips)
    save_bundle(tmp_path / "t", join_manifests([m for m, _ in members], None, None),
                ensemble_state([{k: v.clone() for k, v in s.items()} for _, s in members]))
    out = tmp_path / "student"
    assert main([*common, "--from-bundle", str(tmp_path / "t"), "--teacher", str(tmp_path / "t"),
                 "--finetune-steps", "2", "--finetune-sources", "all", "--finetune-freeze", "none",
                 "--distill-frame-weight", "0.5", "--out", str(out)]) == 0
    training = json.loads((out / "manifest.json").read_text())["training"]
    teacher, _ = load_bundle(tmp_path / "t")
    assert training["teacher"] == f"{teacher.scorer_name} (sha256 {teacher.weights_sha256})"
    assert training["finetune"]["config"]["distill_weight"] == 1.0
    assert training["finetune"]["config"]["distill_frame_weight"] == 0.5
    assert "member 0" in training["weights_from"]
    assert load_scorer(out, device="cpu").name == "syncnet-lite@0.0.1"


def test_make_model_refuses_a_missing_teacher_or_source_bundle_in_one_line_before_loading_clips(tmp_path):
    from model_store.training.make_model import main

    for flag in ("--teacher", "--from-bundle"):
        with pytest.raises(SystemExit, match=rf"^{flag} {tmp_path / 'nowhere'}: no such directory"):
            main(["--no-real", "--synth-clips", "4", flag, str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


def test_a_teacher_hears_the_full_band_where_the_student_hears_a_telephone_band():
    from model_store.architectures import build
    from model_store.training.train import teacher_embed

    torch.manual_seed(0)
    teacher = build("syncnet_lite_v1", {"video_channels": [8, 8, 8, 8]}).eval()
    b, f, n_audio = 2, 10, 16
    full = torch.randn(b, 40, 4 * (n_audio + 8))
    narrow = full.clone()
    narrow[:, 30:] = -3.0
    common = {"frames": torch.rand(b, f, 96, 96), "frame_ok": torch.ones(b, f - 6, dtype=torch.bool),
              "audio_ok": torch.ones(b, n_audio, dtype=torch.bool), "label": torch.zeros(b, dtype=torch.long),
              "clip_ids": [0, 1]}
    x = common["frames"]
    _, a_full = teacher_embed(teacher, Batch(mel=full, **common), 4, x)
    _, a_narrow = teacher_embed(teacher, Batch(mel=narrow, **common), 4, x)
    _, a_taught = teacher_embed(teacher, Batch(mel=narrow, teacher_mel=full, **common), 4, x)
    assert torch.allclose(a_taught, a_full) and not torch.allclose(a_narrow, a_full)


def test_make_model_records_the_audio_augmentations(tmp_path):
    import json

    from model_store.training.make_model import main

    out = tmp_path / "b"
    assert main(["--no-real", "--synth-clips", "4", "--batch-size", "4", "--steps", "2", "--finetune-steps", "2",
                 "--band-limit", "0.5", "--out", str(out)]) == 0
    training = json.loads((out / "manifest.json").read_text())["training"]
    assert training["augment"]["band_limit"] == 0.5 and training["augment"]["voice_warp"] == 0.0
    with pytest.raises(SystemExit, match="--band-limit must be in"):
        main(["--no-real", "--band-limit", "1.5", "--out", str(tmp_path / "c")])

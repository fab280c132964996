"""Ensemble bundles (architecture ``ensemble_v1``): the scorer sees one dual encoder whose
similarity curve is the mean of its members' curves; joining bundles checks they can be joined."""

import dataclasses

import numpy as np
import pytest
import torch

from model_store.architectures import build
from model_store.architectures.ensemble import ensemble_state
from model_store.bundle import AudioSpec, Calibration, Manifest, VideoSpec, load_bundle, save_bundle
from model_store.training.ensemble import join_manifests, network_states
from model_store.training.ensemble import main as ensemble_main
from worker.scoring.conv_matmul import Conv1dMatmul
from worker.scoring.postprocess import ScorerConfig
from worker.scoring.scorer import ModelScorer
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
from worker.synth import SynthOptions, generate_clip

SR = 16000
PARAMS = {"video_channels": [8, 8, 16, 16]}  # small members: these tests check plumbing, not accuracy


def _manifest(name: str, dev_train=(), dev_heldout=()) -> Manifest:
    return Manifest(name, "0.0.1", "syncnet_lite_v1", PARAMS, 128, AudioSpec(), VideoSpec(), Calibration(),
                    "weights.safetensors", "",
                    training={"data": {"dev_train_clips": list(dev_train), "dev_heldout_clips": list(dev_heldout)}})


def _member(seed: int) -> dict:
    torch.manual_seed(seed)
    model = build("syncnet_lite_v1", PARAMS)
    # random BatchNorm statistics, so fusing them at load time is exercised too
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def _ensemble_scorer(manifests, states) -> ModelScorer:
    man = join_manifests(manifests, None, None)
    return ModelScorer(man, ensemble_state(states), ScorerConfig(cpu_jit=False), device="cpu")


@pytest.fixture(scope="module")
def request_():
    clip = generate_clip(5, 1.5, 40.0, SynthOptions())
    frames = FrameSpan(clip.frames[:25], clip.fps, 0)
    return ScoreRequest(Kind.WINDOW, frames, AudioSpan(clip.audio, SR, 0))


def test_an_ensemble_of_one_network_twice_scores_like_the_network(request_):
    state = _member(1)
    single = ModelScorer(_manifest("a"), state, ScorerConfig(cpu_jit=False), device="cpu").score(request_)
    twice = _ensemble_scorer([_manifest("a"), _manifest("a")], [state, state]).score(request_)
    np.testing.assert_allclose(twice.curve, single.curve, atol=1e-5)
    assert twice.offset_ms == single.offset_ms
    assert twice.score == pytest.approx(single.score, abs=1e-5)


def test_the_ensembles_curve_is_the_mean_of_its_members_curves(request_):
    states = [_member(1), _member(2), _member(3)]
    curves = [np.array(ModelScorer(_manifest("m"), s, ScorerConfig(cpu_jit=False), device="cpu").score(request_).curve)
              for s in states]
    assert np.abs(curves[0] - curves[1]).max() > 1e-3  # the members really differ
    ens = _ensemble_scorer([_manifest("m")] * 3, states).score(request_)
    np.testing.assert_allclose(ens.curve, np.mean(curves, axis=0), atol=1e-5)


def test_the_frozen_cpu_path_matches_the_eager_one(request_):
    states = [_member(1), _member(2)]
    man = join_manifests([_manifest("a"), _manifest("b")], None, None)
    eager = ModelScorer(man, ensemble_state(states), ScorerConfig(cpu_jit=False), device="cpu").score(request_)
    frozen_scorer = ModelScorer(man, ensemble_state(states), ScorerConfig(cpu_jit=True), device="cpu")
    # traced CNNs, not the eager fallback; the head's convolutions as matrix products
    assert isinstance(frozen_scorer._encode_frames, torch.jit.ScriptModule)
    assert isinstance(frozen_scorer._encode_audio, torch.jit.ScriptModule)
    assert any(isinstance(m, Conv1dMatmul) for m in frozen_scorer._video_head.modules())
    frozen = frozen_scorer.score(request_)
    np.testing.assert_allclose(frozen.curve, eager.curve, atol=1e-4)


def test_join_manifests_records_members_and_keeps_only_clips_no_member_trained_on():
    a = _manifest("a", dev_train=["x", "y"], dev_heldout=["z", "w"])
    b = _manifest("b", dev_train=["z"], dev_heldout=["x", "y", "w"])
    man = join_manifests([a, b], "ens", "2.0.0")
    assert man.scorer_name == "ens@2.0.0" and man.architecture == "ensemble_v1"
    assert man.training["data"] == {"dev_train_clips": ["x", "y", "z"], "dev_heldout_clips": ["w"]}
    assert [m["bundle"] for m in man.training["members"]] == ["a@0.0.1", "b@0.0.1"]
    assert man.arch_params["members"][1] == {"architecture": "syncnet_lite_v1", "arch_params": PARAMS}


def test_members_with_different_input_formats_cannot_be_joined():
    a = _manifest("a")
    b = dataclasses.replace(_manifest("b"), video=dataclasses.replace(VideoSpec(), roi_height=64))
    with pytest.raises(ValueError, match="differ in video"):
        join_manifests([a, b], None, None)


def test_members_of_different_audio_reach_are_fed_the_widest_context(request_):
    """A member with the wider audio view (make_model --audio-context-layers) joins a plain one:
    the ensemble pads the audio for the wider, and the plain member's curve is unchanged by the
    extra context it ignores (up to the mel normalisation over the longer span)."""
    wide_params = {**PARAMS, "audio_context_layers": 2}
    torch.manual_seed(2)
    wide_state = build("syncnet_lite_v1", wide_params).state_dict()
    plain = _manifest("a")
    wide = dataclasses.replace(_manifest("b"), arch_params=wide_params,
                               audio=dataclasses.replace(AudioSpec(), context_frames=8))
    man = join_manifests([plain, wide], None, None)
    assert man.audio.context_frames == 8
    state = _member(1)
    joined = ModelScorer(man, ensemble_state([state, wide_state]), ScorerConfig(cpu_jit=False), device="cpu")
    alone = [ModelScorer(m, s, ScorerConfig(cpu_jit=False), device="cpu").score(request_).curve
             for m, s in ((plain, state), (wide, wide_state))]
    np.testing.assert_allclose(joined.score(request_).curve, np.mean(alone, axis=0), atol=2e-3)
    with pytest.raises(ValueError, match="differ in audio"):
        join_manifests([plain, dataclasses.replace(wide, audio=dataclasses.replace(AudioSpec(), n_mels=64))],
                       None, None)


def test_ensemble_cli_bad_members_give_one_line(tmp_path):
    d = tmp_path / "a"
    save_bundle(d, _manifest("a"), _member(1))
    with pytest.raises(SystemExit, match="at least two bundles"):
        ensemble_main(["--members", str(d), "--out", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match=r"^--members: .*nowhere"):
        ensemble_main(["--members", f"{d},{tmp_path / 'nowhere'}", "--out", str(tmp_path / "e")])


def test_an_ensemble_bundle_round_trips(tmp_path, request_):
    states = [_member(1), _member(2)]
    man = join_manifests([_manifest("a"), _manifest("b")], None, None)
    model = build(man.architecture, man.arch_params)
    model.load_state_dict(ensemble_state(states))
    save_bundle(tmp_path / "e", man, model.state_dict())
    man2, state2 = load_bundle(tmp_path / "e")
    assert man2.arch_params == man.arch_params
    before = ModelScorer(man, ensemble_state(states), ScorerConfig(cpu_jit=False), device="cpu").score(request_)
    after = ModelScorer(man2, state2, ScorerConfig(cpu_jit=False), device="cpu").score(request_)
    np.testing.assert_allclose(after.curve, before.curve, atol=1e-6)


def test_an_ensemble_grows_by_a_network_without_the_others_being_trained_again(tmp_path, request_):
    states = [_member(1), _member(2), _member(3)]
    pair = join_manifests([_manifest("a"), _manifest("b", dev_train=["x"])], "pair", None)
    model = build(pair.architecture, pair.arch_params)
    model.load_state_dict(ensemble_state(states[:2]))
    save_bundle(tmp_path / "pair", pair, model.state_dict())
    pair, pair_state = load_bundle(tmp_path / "pair")
    third = _manifest("c", dev_train=["y"])
    grown = join_manifests([pair, third], "grown", None)
    # the pair's networks are listed one by one, not as a nested ensemble
    assert [m["bundle"] for m in grown.training["members"]] == ["a@0.0.1", "b@0.0.1", "c@0.0.1"]
    assert [m["architecture"] for m in grown.arch_params["members"]] == ["syncnet_lite_v1"] * 3
    assert grown.embedding_dim == 3 * 128 and grown.training["data"]["dev_train_clips"] == ["x", "y"]
    nets = network_states(pair, pair_state) + network_states(third, states[2])
    got = ModelScorer(grown, ensemble_state(nets), ScorerConfig(cpu_jit=False), device="cpu").score(request_)
    want = _ensemble_scorer([_manifest("a"), _manifest("b"), third], states).score(request_)
    np.testing.assert_allclose(got.curve, want.curve, atol=1e-6)
    assert got.offset_ms == want.offset_ms


def test_the_shipped_bundle_is_one_network_distilled_from_the_shipped_ensemble():
    """README / docs/training.md: model_store/bundles/default (1.7.0) is one network that started as
    the ensemble's first network and was trained to match the ensemble (make_model --teacher)."""
    from model_store.bundle import DEFAULT_BUNDLE_DIR

    ens_man, _ = load_bundle(DEFAULT_BUNDLE_DIR.parent / "ensemble")
    man, _ = load_bundle(DEFAULT_BUNDLE_DIR)
    assert ens_man.architecture == "ensemble_v1" and man.architecture == "syncnet_lite_v1"
    assert ens_man.arch_params["members"][0]["arch_params"] == man.arch_params
    named = f"{ens_man.scorer_name} (sha256 {ens_man.weights_sha256})"
    assert man.training["teacher"] == named
    assert man.training["weights_from"] == named.replace(" (sha256", ", member 0 (sha256")
    assert man.training["finetune"]["config"]["distill_weight"] > 0
    # input format and scoring settings as the teacher's, so their numbers compare
    assert (man.audio, man.video, man.embedding_centering, man.peak_smooth_frames) == \
        (ens_man.audio, ens_man.video, ens_man.embedding_centering, ens_man.peak_smooth_frames)


def test_the_shipped_bundles_were_made_with_the_makefiles_distillation_recipe():
    """`make model` / `make model-cv` must reproduce what ships: the default bundle's and the folds'
    version and distillation stage (steps, weights, frozen side) are the Makefile's MODEL_VERSION and
    DISTIL."""
    import re
    import shlex

    from model_store.bundle import DEFAULT_BUNDLE_DIR

    text = (DEFAULT_BUNDLE_DIR.parents[2] / "Makefile").read_text().replace("\\\n", " ")
    version = re.search(r"^MODEL_VERSION := (\S+)$", text, re.MULTILINE).group(1)
    words = shlex.split(re.search(r"^DISTIL := (.+)$", text, re.MULTILINE).group(1))
    flags = dict(zip(words[::2], words[1::2]))
    for name in ("default", "cv-fold-1", "cv-fold-2"):
        man, _ = load_bundle(DEFAULT_BUNDLE_DIR.parent / name)
        stage = man.training["finetune"]
        assert man.version == version, name
        assert stage["config"]["steps"] == int(flags["--finetune-steps"]), name
        assert stage["config"]["distill_weight"] == float(flags["--distill-weight"]), name
        # (the folds' runs predate the per-frame term: no key means 0)
        assert stage["config"].get("distill_frame_weight", 0.0) == float(flags.get("--distill-frame-weight", 0.0)), name
        assert stage["frozen"] == flags["--finetune-freeze"], name

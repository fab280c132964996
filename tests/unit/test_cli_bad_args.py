"""Bad values on the command line, in a config file or in a bundle's manifest are one line and a
non-zero exit, found before any work: each case here was a traceback, a hang, or a value taken
as meaning something else in a review of every subcommand (NaN passes "x <= 0", inf and huge
numbers crashed converting to int or allocating, 99999 torch threads hung)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.cli import one_error_line as _one_line
from worker.cli import main


@pytest.mark.parametrize("argv, says", [
    (["bench", "--blocks", "10", "--fps", "0"], "--fps must be within 10..240"),
    (["bench", "--blocks", "10", "--fps", "nan"], "--fps must be within 10..240"),
    (["bench", "--blocks", "10", "--threads", "-1"], "--threads must be within 0..256"),
    (["bench", "--blocks", "10", "--threads", "99999"], "--threads must be within 0..256"),
    (["bench", "--blocks", "99999999999"], "--blocks must be within 10..100000"),
    (["serve", "--max-body-mb", "inf"], "--max-body-mb must be positive and at most 1024"),
    (["serve", "--max-body-mb", "nan"], "--max-body-mb must be positive and at most 1024"),
    (["serve", "--max-body-mb", "99999999"], "--max-body-mb must be positive and at most 1024"),
    (["serve", "--max-seconds", "nan"], "--max-seconds must be positive and at most"),
    (["eval-real", "--limit", "-1"], "--limit must be >= 0"),
    (["eval-real", "--threads", "99999"], "--threads must be within 1..256"),
    (["eval-synth", "--conditions", ","], "--conditions names none"),
    (["loadtest", "--sweep", "1,0", "--seconds", "2"], "--sweep session count must be within 1..1000, got 0"),
    (["loadtest", "--sweep", ",", "--seconds", "2"], "--sweep names no session count"),
    (["replay", "--session", "a", "--timeout-s", "nan"], "--timeout-s must be positive and at most 86400"),
])
def test_a_bad_number_is_one_line_before_any_work(capsys, argv, says):
    assert says in _one_line(capsys, argv)


@pytest.mark.parametrize("flag", ["--fps=nan", "--grace-s=-1", "--margin-ms=inf", "--p99-target-ms=0"])
def test_loadtest_checks_its_numbers_before_a_broker_or_worker_starts(capsys, flag):
    assert flag.split("=")[0] in _one_line(capsys, ["loadtest", "--sessions", "1", "--seconds", "2", flag])


def test_check_range_gives_one_message_form_for_every_bound():
    from worker.cli import CliError, check_range

    def says(*args, **kwargs) -> str:
        with pytest.raises(CliError) as err:
            check_range(*args, **kwargs)
        return str(err.value)

    assert says("--fps", 2.0, 10.0, 240.0) == "--fps must be within 10..240, got 2"
    assert says("--fps", float("nan"), 10.0, 240.0) == "--fps must be within 10..240, got nan"
    assert says("--blocks", 99999999999, 10, 100_000) == "--blocks must be within 10..100000, got 99999999999"
    assert says("--max-body-mb", 0.0, 0, 1024, lo_open=True) == "--max-body-mb must be positive and at most 1024, got 0"
    assert says("--limit", -1, 0, note=" (0: every clip)") == "--limit must be >= 0 (0: every clip), got -1"
    assert says("--x", 1.0, 1.0, 2.0, lo_open=True) == "--x must be within 1..2 (exclusive of 1), got 1"
    check_range("--fps", None, 10.0, 240.0)  # a flag not given
    check_range("--fps", 10.0, 10.0, 240.0)  # bounds are in
    check_range("--limit", 10**12, 0)


def test_an_evaluation_output_that_cannot_be_written_is_refused_before_the_run(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_line(capsys, ["eval-synth", "--clips", "1", "--out", str(tmp_path / "file" / "synth.json")])
    assert line.startswith("error: --out ") and "is not a directory" in line
    line = _one_line(capsys, ["eval-synth", "--clips", "1", "--out", str(tmp_path)])
    assert "not a file that can be written" in line


def test_run_demo_refuses_a_nan_offset(capsys, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # the local demo, not a cluster
    assert "--offsets-ms needs 1+ offsets within +/-1000 ms" in _one_line(capsys, ["run-demo", "--offsets-ms", "0,nan"])


def test_synth_refuses_a_noise_level_out_of_range(capsys, tmp_path):
    for value in ("1e9", "-1e9", "nan"):
        assert main(["synth", str(tmp_path / "s.mp4"), "--seconds", "1", "--seed", "1", f"--audio-noise-db={value}"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--audio-noise-db must be within -20..80" in err[0], err
    assert not (tmp_path / "s.mp4").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("sync-scorer ")


# -- the worker's config ------------------------------------------------------------------------

def test_a_blank_broker_variable_is_refused_not_waited_on(monkeypatch):
    from worker.config import ConfigError, load_config

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "  ")
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is blank"):
        load_config(None)


def test_a_config_file_that_is_not_text_names_the_file(tmp_path):
    from worker.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"c\.yaml is not UTF-8 text"):
        load_config(path)


# -- bundles --------------------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(tmp_path):
    from model_store.bundle import DEFAULT_BUNDLE_DIR

    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, out, ignore=shutil.ignore_patterns("narrowband"))
    return out


def _edit_manifest(bundle, edit) -> None:
    path = bundle / "manifest.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


@pytest.mark.parametrize("edit, says", [
    (lambda d: [d], "a JSON object is needed, not a list"),
    (lambda d: {**d, "input": {**d["input"], "audio": {**d["input"]["audio"], "sample_rate": 0}}},
     "input.audio.sample_rate must be a positive integer"),
    (lambda d: {**d, "input": {**d["input"], "audio": {**d["input"]["audio"], "n_mels": True}}},
     "input.audio.n_mels must be a positive integer"),  # a bool is an int to isinstance
    (lambda d: {**d, "input": {**d["input"], "audio": {**d["input"]["audio"], "f_max": float("nan")}}},
     "input.audio.f_max must be a finite number"),  # it scored every job LOW_QUALITY, no word
    (lambda d: {**d, "calibration": {**d["calibration"], "score_a": float("inf")}},
     "calibration.score_a must be a finite number"),
])
def test_a_malformed_manifest_is_one_bundle_error(bundle_copy, edit, says):
    from model_store.bundle import BundleError, read_manifest

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=says):
        read_manifest(bundle_copy)


def test_a_manifest_that_is_not_text_is_one_bundle_error(bundle_copy):
    from model_store.bundle import BundleError, read_manifest

    (bundle_copy / "manifest.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match="cannot read"):
        read_manifest(bundle_copy)


def test_weights_of_another_shape_are_one_line(capsys, bundle_copy):
    """arch_params that are not the weights': torch's error lists every tensor, over 20 lines."""
    _edit_manifest(bundle_copy, lambda d: {**d, "arch_params": {**d["arch_params"], "video_channels": [32, 32, 48, 64]}})
    line = _one_line(capsys, ["bench", "--blocks", "10", "--bundle", str(bundle_copy)])
    assert "weights do not fit" in line and "size mismatch" in line and "more)" in line


def test_a_bundle_path_that_is_a_file_or_missing_says_so(capsys, tmp_path, dev_clips_dir):
    """Before: "no manifest.json in bundle directory FILE" for a file given as --bundle."""
    (tmp_path / "weights.pt").write_bytes(b"x")
    media = dev_clips_dir / "av2av_lrs3_TRajLqEaWhQ_00002.mp4"
    line = _one_line(capsys, ["score", str(media), "--bundle", str(tmp_path / "weights.pt")])
    assert f"not a directory: {tmp_path / 'weights.pt'}" in line
    line = _one_line(capsys, ["score", str(media), "--bundle", str(tmp_path / "nowhere")])
    assert f"no such directory: {tmp_path / 'nowhere'}" in line


def test_an_evaluation_cache_dir_that_is_a_file_names_the_flag(capsys, tmp_path):
    (tmp_path / "cache").write_text("x")  # before: "[Errno 17] File exists", after the scorer loaded
    clips = ["--clips-dir", str(tmp_path), "--no-speed"]
    line = _one_line(capsys, ["eval-real", "--cache-dir", str(tmp_path / "cache"), *clips])
    assert line == f"error: --cache-dir is not a directory: {tmp_path / 'cache'}"
    line = _one_line(capsys, ["eval-real", "--cache-dir", str(tmp_path / "cache" / "sub"), *clips])  # errno 20
    assert line == f"error: --cache-dir {tmp_path / 'cache' / 'sub'}: {tmp_path / 'cache'} is not a directory"


def test_synth_words_its_errors_as_the_other_commands_do(capsys, tmp_path):
    line = _one_line(capsys, ["synth", str(tmp_path / "no" / "s.mp4"), "--seconds", "1", "--seed", "1"])
    assert line == f"error: output directory does not exist: {tmp_path / 'no'}"  # was "sync-scorer synth: error: ..."

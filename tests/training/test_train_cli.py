"""``python -m training train ...``: the commands run the trainers and report through exit status; evaluation
of flow and RL runs at a chosen CFG scale; generation from audio."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from training_fixtures import (  # noqa: F401
    conversation_shards_fixture,
    flame_shards_fixture,
    flow_run_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.__main__ import main
from training.config import load_run_config
from training.evaluate import run_evaluator
from training.trainer_base import progress_bar


def _yaml(tmp_path, config: dict):
    path = tmp_path / f"{config['kind']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_sft_dry_run_records_the_datas_rates_in_the_run_config(tmp_path, flame_shards, capsys):
    run_dir = tmp_path / "vae"
    path = _yaml(tmp_path, tiny_config("vae", run_dir, flame_shards))
    assert main(["train", "sft", "--config", str(path), "--dry-run", "--no-progress"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["data"]["fps"], saved["data"]["sample_rate"], saved["progress"]) == (24.0, 16000, False)
    assert "done: 1 step(s)" in capsys.readouterr().out
    assert not (run_dir / "checkpoints").exists()


def test_a_config_of_the_wrong_kind_exits_with_status_2(tmp_path, flame_shards):
    path = _yaml(tmp_path, tiny_config("rl", tmp_path / "rl", flame_shards))
    assert main(["train", "sft", "--config", str(path)]) == 2
    with pytest.raises(SystemExit):
        main(["train"])  # the sub-command is required


def _evaluate(capsys, run, shards, *extra) -> dict:
    assert main(["train", "evaluate", "--run", str(run), "--shards", str(shards), "--no-progress", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_prints_the_metrics_of_a_flow_run_without_guidance_unless_asked(flow_run, flame_shards,
                                                                                        capsys):
    metrics = _evaluate(capsys, flow_run, flame_shards)
    assert metrics["windows"] == 3 and metrics["run"]["kind"] == "flow"
    assert {"dd_upper_face", "dd_jaw", "dd_head_pose"} <= metrics.keys() and metrics["dd_jaw"] >= 0.0
    # The run samples at flow.guidance_scale 1.5 in training; reported metrics are at 1.0 (the papers').
    assert yaml.safe_load((flow_run / "config.yaml").read_text())["flow"]["guidance_scale"] == 1.5
    assert metrics["guidance"] == {"speak": 1.0, "listen": 1.0}
    assert metrics["dd_space"].startswith("FLAME parameters")
    guided = _evaluate(capsys, flow_run, flame_shards, "--guidance-scale", "4")
    assert guided["guidance"] == {"speak": 4.0, "listen": 4.0}
    assert guided["dd_jaw"] != metrics["dd_jaw"]  # same seeded noise: only the guidance differs


def test_train_evaluate_scores_an_rl_checkpoint(tmp_path, flow_run, flame_shards, capsys):
    from accelerate.state import AcceleratorState

    from training.rl import run_rl

    AcceleratorState._reset_state()
    rl_dir = tmp_path / "rl"
    run_rl(load_run_config(None, **tiny_config(
        "rl", rl_dir, flame_shards, steps=1, save_every=1, data={"batch_size": 2},
        optim={"lr": 1e-2, "grad_clip": None}, rl={"init_run": str(flow_run), "listener_only": False})))
    AcceleratorState._reset_state()
    capsys.readouterr()  # the run's log lines
    rl_metrics = _evaluate(capsys, rl_dir, flame_shards)
    assert rl_metrics["run"] == {"dir": str(rl_dir), "kind": "rl"} and rl_metrics["windows"] == 3
    sft_metrics = _evaluate(capsys, flow_run, flame_shards)
    # Same windows, same seeded noise, same guidance: the RL update is the difference.
    assert rl_metrics["dd_jaw"] != sft_metrics["dd_jaw"]
    assert run_evaluator(load_run_config(rl_dir / "config.yaml", data={"eval_shards": str(flame_shards)}),
                         torch.device("cpu")) is not None


def test_an_rl_run_scores_itself_on_held_out_shards_every_eval_every_steps(tmp_path, flow_run, flame_shards):
    from accelerate.state import AcceleratorState

    from training.rl import run_rl

    AcceleratorState._reset_state()
    rl_dir = tmp_path / "rl"
    run_rl(load_run_config(None, **tiny_config(
        "rl", rl_dir, flame_shards, steps=2, eval_every=1, data={"batch_size": 2, "eval_shards": str(flame_shards)},
        optim={"lr": 1e-2, "grad_clip": None}, rl={"init_run": str(flow_run), "listener_only": False})))
    AcceleratorState._reset_state()
    rows = [json.loads(line) for line in (rl_dir / "log.jsonl").read_text().splitlines()]
    scored = [row for row in rows if "eval" in row]
    assert [row["step"] for row in scored] == [1, 2]
    assert all(row["eval"]["windows"] == 3 and row["eval"]["guidance"] == {"speak": 1.0, "listen": 1.0}
               for row in scored)
    assert scored[0]["eval"]["dd_jaw"] != scored[1]["eval"]["dd_jaw"]  # the policy moved between the two


def _cut_audio(source, seconds: float, out) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", str(seconds), "-vn", "-ac", "2",
                    "-ar", "44100", str(out)], check=True)


@pytest.mark.parametrize("seconds,asked", [(2.5, None), (2.5, 7.3)])
def test_train_generate_writes_a_flame_sequence_as_long_as_the_audio(tmp_path, flow_run, flame_shards, grid_clip,
                                                                      seconds, asked, capsys):
    """A GRID clip's speech cut by ffmpeg to 2.5 s (stereo 44.1 kHz: decoded to the run's 16 kHz mono): 60 frames at
    24 fps, within one window of 48 frames; asked for 7.3 s (silence after the speech): 175 frames, 22 latents
    by the sliding window."""
    audio = tmp_path / "speech.m4a"
    _cut_audio(grid_clip, seconds, audio)
    out = tmp_path / "motion.npz"
    length = [] if asked is None else ["--seconds", str(asked)]
    assert main(["train", "generate", "--run", str(flow_run), "--audio", str(audio), "--out", str(out),
                 "--text", "a calm neutral face", *length]) == 0
    frames = round((asked or seconds) * 24)
    assert f"{frames} frames at 24 fps" in capsys.readouterr().out
    shard_member = next(iter(_one_flame_npz(flame_shards)))
    with np.load(out) as made, np.load(shard_member) as stored:
        names = {n for n in stored.files if n.startswith("smooth/")}
        assert {n for n in made.files if n.startswith("smooth/")} == names and float(made["meta/fps"]) == 24.0
        for name in names:
            assert made[name].shape == (frames, stored[name].shape[1]) and np.isfinite(made[name]).all()


def _one_flame_npz(shards):
    import io
    import tarfile

    from training.data import shard_urls

    with tarfile.open(shard_urls(str(shards))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".flame.npz"))
        yield io.BytesIO(tar.extractfile(member).read())


def test_generate_is_seeded_and_follows_the_guidance_scale(tmp_path, flow_run, grid_clip):
    from training.generate import generate

    audio = tmp_path / "speech.wav"
    _cut_audio(grid_clip, 2.0, audio)
    first = generate(flow_run, audio, tmp_path / "a.npz", guidance_scale=1.0, seed=3)
    generate(flow_run, audio, tmp_path / "b.npz", guidance_scale=1.0, seed=3)
    generate(flow_run, audio, tmp_path / "c.npz", guidance_scale=3.0, seed=3)
    assert first["frames"] == 48
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b, np.load(tmp_path / "c.npz") as c:
        assert all(np.array_equal(a[n], b[n]) for n in a.files)
        assert not np.allclose(a["smooth/jaw"], c["smooth/jaw"])


def test_progress_bars_show_only_on_a_terminal_and_when_asked(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert progress_bar(5, "x", enabled=True).disable
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not progress_bar(5, "x", enabled=True).disable
    assert progress_bar(5, "x", enabled=False).disable


def test_gdpo_listener_layout_trains_evaluates_generates_and_rolls_out(tmp_path, vae_run, tiny_encoders,
                                                                       conversation_shards, grid_clip, capsys):
    """Frame-rate audio tokens with TMRoPE and partner streams, on conversation shards: SFT steps, RL on
    listening frames, evaluation and a generated sequence longer than one window."""
    from accelerate.state import AcceleratorState

    from training.rl import run_rl
    from training.sft import run_sft

    layout = {"audio_tokens": "frames", "positions": "tmrope"}
    flow_dir = tmp_path / "flow"
    AcceleratorState._reset_state()
    rows = run_sft(load_run_config(None, **tiny_config("flow", flow_dir, conversation_shards, tiny_encoders, vae_run,
                                                       steps=2, save_every=2, flow=layout)))
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    AcceleratorState._reset_state()
    rl = run_rl(load_run_config(None, **tiny_config("rl", tmp_path / "rl", conversation_shards, steps=1, save_every=1,
                                                    data={"batch_size": 2}, rl={"init_run": str(flow_dir)})))
    assert rl[0]["listener_latents"] > 0 and np.isfinite(rl[0]["loss"])
    AcceleratorState._reset_state()
    capsys.readouterr()
    metrics = _evaluate(capsys, tmp_path / "rl", conversation_shards)
    assert metrics["run"]["kind"] == "rl" and metrics["listening"]["frames"] > 0
    audio = tmp_path / "speech.wav"
    _cut_audio(grid_clip, 2.0, audio)
    assert main(["train", "generate", "--run", str(tmp_path / "rl"), "--audio", str(audio), "--out",
                 str(tmp_path / "motion.npz"), "--seconds", "5"]) == 0
    with np.load(tmp_path / "motion.npz") as made:
        assert made["smooth/jaw"].shape == (120, 3)

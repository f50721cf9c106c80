"""Runs survive interruption: SIGTERM near the middle of a short run writes a checkpoint and exits 143 with one
line; --resume continues it, and the result is bitwise the run that was never interrupted (parameters, optimizer
state, replay-driven metrics), because every RNG, the env and the loop state travel in the checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

DMC_TINY = ["--total-timesteps", "1200", "--learning-starts", "400", "--batch-size", "16", "--eval-episodes", "1",
            "--episode-length", "200", "--eval-frequency", "400", "--buffer-size", "1000", "--hidden-dim", "32",
            "--no-cuda", "--save-model"]
ATARI_TINY = ["--env-id", "Breakout", "--total-timesteps", "600", "--learning-starts", "200", "--batch-size", "8",
              "--eval-episodes", "1", "--log-interval", "50", "--max-episode-steps", "150", "--no-cuda", "--save-model"]
CASES = {
    "drq_dqn": (ATARI_TINY, 600),
    "drq_dqn:drq-eps": (["drq-eps", *ATARI_TINY, "--buffer-size", "5000"], 600),
    "nddqn_atari": (ATARI_TINY, 600),
    "drq_sac": (["--k", "2", "--m", "2", *DMC_TINY], 1200),
    "sac_pixels": (DMC_TINY, 1200),
    "sac_state": (DMC_TINY, 1200),
    # pixels, the decoder and SAC-AE's burst of updates as learning starts (sac_ae_frozen: tests/test_autoencoder.py)
    "sac_ae": (["--total-timesteps", "480", "--learning-starts", "160", "--batch-size", "8",
                "--eval-episodes", "1", "--episode-length", "80", "--eval-frequency", "240", "--buffer-size", "500",
                "--hidden-dim", "32", "--no-cuda", "--save-model"], 480),
}


def run_dir(runs: Path) -> Path:
    (only,) = [p for p in runs.iterdir() if p.is_dir()]
    return only


def metrics(path: Path) -> list[dict]:
    """Logged points without the wall-clock fields, which no two runs share."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("time", "charts/SPS")} for row in rows]


def step_of(line: str) -> int | None:
    if line.startswith("step "):
        return int(line.split()[1].split("/")[0])
    return None


def oversized(value, where="") -> list[str]:
    if isinstance(value, torch.Tensor):
        return [where] if value.untyped_storage().nbytes() > value.nbytes else []
    if isinstance(value, dict):
        return [w for key, v in value.items() for w in oversized(v, f"{where}.{key}")]
    if isinstance(value, (list, tuple)):
        return [w for i, v in enumerate(value) for w in oversized(v, f"{where}[{i}]")]
    return []


def assert_same_state(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("script", sorted(CASES))
def test_sigterm_then_resume_is_bitwise_the_uninterrupted_run(script, tmp_path):
    flags, total = CASES[script]
    cmd = [sys.executable, str(ROOT / f"{script.split(':')[0]}.py"), *flags]
    straight = tmp_path / "straight"
    subprocess.run([*cmd, "--runs-dir", str(straight)], env=ENV, check=True, capture_output=True, timeout=600)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([*cmd, "--runs-dir", str(cut)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        step = step_of(line)
        if step is not None and step >= total // 2:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    (last,) = [line for line in out.splitlines() if "SIGTERM" in line]
    assert "--resume" in last and "checkpoint" in last
    directory = run_dir(cut)
    assert (directory / "checkpoint.pt").is_file() and not (directory / "final.json").exists()
    # the replay's written part only: no tensor drags a larger storage (the whole preallocated buffer) into the file
    assert not oversized(torch.load(directory / "checkpoint.pt", weights_only=True))

    resumed = subprocess.run([*cmd, "--runs-dir", str(cut), "--resume", str(directory)], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = run_dir(straight), directory
    assert metrics(a) == metrics(b)
    final_a, final_b = json.loads((a / "final.json").read_text()), json.loads((b / "final.json").read_text())
    assert final_a["returns"] == final_b["returns"]
    model_a = torch.load(a / "model.pt", weights_only=True)["agent"]
    model_b = torch.load(b / "model.pt", weights_only=True)["agent"]
    assert_same_state(model_a, model_b)
    assert not (b / "checkpoint.pt").exists()  # a finished run drops its replay from disk


def test_pretrain_autoencoder_sigterm_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    """The training phase, stopped inside an epoch: the resumed run reuses the dataset it collected and ends with the
    uninterrupted run's metrics and encoder.pt (its outputs differ from the RL scripts', hence not in CASES)."""
    cmd = [sys.executable, str(ROOT / "pretrain_autoencoder.py"), "--num-frames", "40", "--episode-length", "80",
           "--batch-size", "4", "--epochs", "6", "--eval-frames", "8", "--png-frames", "2", "--no-cuda",
           "--dataset-dir", str(tmp_path / "datasets")]
    total = 6 * (30 // 4)  # epochs x minibatches of the 30 training frames (the episode boundary at 30 of 40)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    subprocess.run([*cmd, "--runs-dir", str(straight)], env=ENV, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*cmd, "--runs-dir", str(cut)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        step = step_of(line)
        if step is not None and step >= total // 2:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in err, err
    (last,) = [line for line in out.splitlines() if "SIGTERM" in line]
    assert "--resume" in last and "checkpoint" in last
    directory = run_dir(cut)
    assert (directory / "checkpoint.pt").is_file() and not (directory / "final.json").exists()
    # the replay's written part only: no tensor drags a larger storage (the whole preallocated buffer) into the file
    assert not oversized(torch.load(directory / "checkpoint.pt", weights_only=True))

    resumed = subprocess.run([*cmd, "--runs-dir", str(cut), "--resume", str(directory)], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "collecting" not in resumed.stdout  # the dataset it collected before the signal
    a, b = run_dir(straight), directory
    assert metrics(a) == metrics(b) and len(metrics(a)) == 6
    ae_a, ae_b = (torch.load(run / "encoder.pt", weights_only=True) for run in (a, b))
    assert_same_state({k: ae_a[k] for k in ("encoder", "decoder")}, {k: ae_b[k] for k in ("encoder", "decoder")})
    assert not (b / "checkpoint.pt").exists()


def test_resume_refuses_metrics_shorter_than_its_checkpoint(tmp_path):
    """A checkpoint paired with an older metrics.jsonl (say, a committed copy) must not pad the file with zeros."""
    import types

    import run_utils

    (tmp_path / "metrics.jsonl").write_text('{"global_step": 1}\n')
    with pytest.raises(SystemExit, match="^error: .*metrics.jsonl holds 19 bytes but its checkpoint logged 500"):
        run_utils.RunLogger(types.SimpleNamespace(track=False), tmp_path, {"algo": "a", "run_name": "r"},
                            resume={"metrics_bytes": 500, "wandb_id": None})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"global_step": 1}\n'

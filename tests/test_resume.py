"""Runs survive interruption: SIGTERM near the middle of a short run writes a checkpoint and exits 143 with one
line; --resume continues it, and the result is bitwise the run that was never interrupted (parameters, optimizer
state, replay-driven metrics), because every RNG, the env and the loop state travel in the checkpoint."""
import sys
from pathlib import Path

import pytest

from helpers import assert_same_pretrain_run, assert_same_rl_run, interrupt_and_resume, metrics

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.mark.parametrize("script", sorted(CASES))
def test_sigterm_then_resume_is_bitwise_the_uninterrupted_run(script, tmp_path):
    flags, total = CASES[script]
    cmd = [sys.executable, str(ROOT / f"{script.split(':')[0]}.py"), *flags]
    straight, resumed_run, _ = interrupt_and_resume(cmd, tmp_path, total)
    assert_same_rl_run(straight, resumed_run)


def test_pretrain_autoencoder_sigterm_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    """The training phase, stopped inside an epoch: the resumed run reuses the dataset it collected and ends with the
    uninterrupted run's metrics and encoder.pt (its outputs differ from the RL scripts', hence not in CASES)."""
    cmd = [sys.executable, str(ROOT / "pretrain_autoencoder.py"), "--num-frames", "40", "--episode-length", "80",
           "--batch-size", "4", "--epochs", "6", "--eval-frames", "8", "--png-frames", "2", "--no-cuda",
           "--dataset-dir", str(tmp_path / "datasets")]
    total = 6 * (30 // 4)  # epochs x minibatches of the 30 training frames (the episode boundary at 30 of 40)
    straight, resumed_run, resumed = interrupt_and_resume(cmd, tmp_path, total)
    assert "collecting" not in resumed.stdout  # the dataset it collected before the signal
    assert len(metrics(straight)) == 6
    assert_same_pretrain_run(straight, resumed_run)


def test_resume_refuses_metrics_shorter_than_its_checkpoint(tmp_path):
    """A checkpoint paired with an older metrics.jsonl (say, a committed copy) must not pad the file with zeros."""
    import types

    import run_utils

    (tmp_path / "metrics.jsonl").write_text('{"global_step": 1}\n')
    with pytest.raises(SystemExit, match="^error: .*metrics.jsonl holds 19 bytes but its checkpoint logged 500"):
        run_utils.RunLogger(types.SimpleNamespace(track=False), tmp_path, {"algo": "a", "run_name": "r"},
                            resume={"metrics_bytes": 500, "wandb_id": None})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"global_step": 1}\n'

"""Bad input through the real entry points: one line on stderr starting `error:`, a non-zero exit, and nothing
written under the runs directory. Each row is a separate `python <script> ...` process, as a user types it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DMC = ["drq_sac", "sac_pixels", "sac_state"]
ATARI = ["nddqn_atari", "drq_dqn"]
ALL = DMC + ATARI


def corrupt(tmp: Path) -> str:
    (tmp / "run").mkdir()
    (tmp / "run" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated zip")
    return str(tmp / "run")


def foreign(tmp: Path) -> str:
    (tmp / "other").mkdir()
    torch.save({"script": "pretrain_autoencoder", "args": {}}, tmp / "other" / "checkpoint.pt")
    return str(tmp / "other")


def conflicting(tmp: Path) -> str:
    """A drq_sac checkpoint of a K=2 run; the command line asks for --k 3."""
    (tmp / "k2").mkdir()
    torch.save({"script": "drq_sac", "args": {"k": 2}}, tmp / "k2" / "checkpoint.pt")
    return str(tmp / "k2")


def unwritable(tmp: Path) -> str:
    (tmp / "a_file").write_text("")
    return str(tmp / "a_file" / "runs")


def not_an_encoder(tmp: Path) -> str:
    """A checkpoint of another script where an encoder.pt or a policy's model.pt belongs."""
    torch.save({"script": "nddqn_atari", "args": {}}, tmp / "foreign.pt")
    return str(tmp / "foreign.pt")


def garbage(tmp: Path) -> str:
    (tmp / "frames.npz").write_bytes(b"not a numpy archive")
    return str(tmp / "frames.npz")


# (scripts, flags (callables get tmp_path), expected start of the message)
CASES = [
    (ALL, ["--total-timesteps", "-5"], "error: --total-timesteps must be positive"),
    (ALL, ["--batch-size", "0"], "error: --batch-size must be positive"),
    (DMC, ["--eval-episodes", "0"], "error: --eval-episodes must be positive"),
    (ATARI, ["--eval-episodes", "0"], "error: --eval-episodes must be positive"),
    (["drq_dqn"], ["--k", "0"], "error: --k must be positive"),
    (ATARI, ["--learning-starts", "200000"], "error: --learning-starts 200000 must exceed --n-step 10"),
    (ATARI, ["--batch-size", "64", "--buffer-size", "32"], "error: --batch-size 64 is larger than the 32"),
    (ATARI, ["--env-id", "Breakoutt"], "error: unknown Atari game 'Breakoutt'; did you mean Breakout"),
    (["drq_dqn"], ["drq-eps", "--max-episode-steps", "-1"], "error: --noop-max, --max-episode-frames and"),
    (ATARI, ["--resume", corrupt], "error: checkpoint"),
    (ATARI, ["--resume", foreign], "error: "),
    (ATARI, ["--eval-checkpoint", "/nonexistent/model.pt"], "error: checkpoint '/nonexistent/model.pt' does not"),
    (ATARI, ["--cuda"], "error: --cuda was given but torch sees no CUDA device"),
    (ATARI, ["--track"], "error: --track in online mode needs a wandb API key"),
    (ATARI, ["--runs-dir", unwritable], "error: --runs-dir"),
    (["drq_sac"], ["--k", "0"], "error: --k must be positive"),
    (["drq_sac"], ["--m", "-1"], "error: --m must be positive"),
    (DMC, ["--total-timesteps", "5000", "--learning-starts", "5000"], "error: --learning-starts 5000 must be in"),
    (DMC, ["--learning-starts", "800", "--batch-size", "512"], "error: --batch-size 512 is larger than the 100"),
    (DMC, ["--env-id", "cartpole-swingupp"], "error: unknown dm_control task 'cartpole-swingupp'; did you mean"),
    (DMC, ["--resume", "/nonexistent/run"], "error: checkpoint '/nonexistent/run/checkpoint.pt' does not exist"),
    (DMC, ["--resume", corrupt], "error: checkpoint"),
    (DMC, ["--resume", foreign], "error: "),
    (["drq_sac"], ["--resume", conflicting, "--k", "3"], "error: --k 3 conflicts with the checkpoint's 2"),
    (DMC, ["--eval-checkpoint", "/nonexistent/model.pt"], "error: checkpoint '/nonexistent/model.pt' does not exist"),
    (["drq_sac", "sac_pixels"], ["--encoder-path", "/nonexistent/encoder.pt"], "error: --encoder-path"),
    (DMC, ["--cuda"], "error: --cuda was given but torch sees no CUDA device"),
    (DMC, ["--track"], "error: --track in online mode needs a wandb API key"),
    (DMC, ["--runs-dir", unwritable], "error: --runs-dir"),
    # sac_ae_frozen.py and sac_ae.py: the DMC checks in their order (values, env, encoder file, learning start, batch,
    # folders, device)
    (["sac_ae_frozen", "sac_ae"], ["--total-timesteps", "-5"], "error: --total-timesteps must be positive"),
    (["sac_ae_frozen"], ["--latent-stack", "0"], "error: --latent-stack must be positive"),
    (["sac_ae"], ["--env-id", "walker-wakl"], "error: unknown dm_control task 'walker-wakl'; did you mean walker-walk"),
    (["sac_ae_frozen"], [], "error: sac_ae_frozen.py needs --encoder-path"),
    (["sac_ae_frozen", "sac_ae"], ["--encoder-path", "/nonexistent/encoder.pt"],
     "error: --encoder-path /nonexistent/encoder.pt does not exist"),
    (["sac_ae_frozen", "sac_ae"], ["--encoder-path", not_an_encoder], "error: --encoder-path"),
    (["sac_ae"], ["--learning-starts", "800", "--batch-size", "512"], "error: --batch-size 512 is larger than the 100"),
    (["sac_ae_frozen", "sac_ae"], ["--resume", foreign], "error: "),
    (["sac_ae"], ["--cuda"], "error: --cuda was given but torch sees no CUDA device"),
    # pretrain_autoencoder.py: its own flags and files, then the shared checks
    (["pretrain_autoencoder"], ["--epochs", "0"], "error: --epochs must be positive"),
    (["pretrain_autoencoder"], ["--heldout-fraction", "1.5"], "error: --heldout-fraction must lie in (0, 1)"),
    (["pretrain_autoencoder"], ["--dataset", "/nonexistent/frames.npz"], "error: --dataset /nonexistent/frames.npz "
                                                                          "does not exist"),
    (["pretrain_autoencoder"], ["--dataset", garbage], "error: --dataset"),
    (["pretrain_autoencoder"], ["--policy-checkpoint", not_an_encoder], "error: --policy-checkpoint"),
    (["pretrain_autoencoder"], ["--eval-encoder", not_an_encoder], "error: --eval-encoder"),
    (["pretrain_autoencoder"], ["--num-frames", "100", "--batch-size", "128"],
     "error: --batch-size 128 is larger than the training split"),
    (["pretrain_autoencoder"], ["--resume", corrupt], "error: checkpoint"),
    (["pretrain_autoencoder"], ["--dataset-dir", unwritable], "error: --dataset-dir"),
    (["pretrain_autoencoder"], ["--track"], "error: --track in online mode needs a wandb API key"),
]
# Each row runs under one of its scripts, in turn (a process costs seconds of imports): the checks are the same
# code in sibling scripts, and every script meets several rows.
PARAMS = [pytest.param(scripts[i % len(scripts)], flags, expected,
                       id=f"{scripts[i % len(scripts)]}:{' '.join(f if isinstance(f, str) else f.__name__ for f in flags)}")
          for i, (scripts, flags, expected) in enumerate(CASES)]


@pytest.mark.parametrize("script,flags,expected", PARAMS)
def test_bad_input_is_one_line_and_writes_nothing(script, flags, expected, tmp_path):
    if "--cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    runs = tmp_path / "runs"
    argv = [f(tmp_path) if callable(f) else f for f in flags]
    if "--runs-dir" not in argv:
        argv += ["--runs-dir", str(runs)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc, so no wandb key
    proc = subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *argv], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr[-2000:]
    assert not runs.exists() or not any(runs.iterdir())

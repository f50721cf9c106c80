"""Helpers shared by the test files (`import helpers`: pytest's default import mode puts tests/ on sys.path): a
run's logged points and state compared bitwise, and a run interrupted by SIGTERM, checked and resumed."""
import json
import os
import signal
import subprocess
from pathlib import Path

import torch

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


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


def assert_same_rl_run(a: Path, b: Path) -> None:
    """An RL script's finished runs `a` and `b` (the resumed one) are bitwise the same: logged points, final
    returns, model.pt's agent; and `b`, finished, has dropped its checkpoint (its replay) from disk."""
    assert metrics(a) == metrics(b)
    final_a, final_b = json.loads((a / "final.json").read_text()), json.loads((b / "final.json").read_text())
    assert final_a["returns"] == final_b["returns"]
    model_a = torch.load(a / "model.pt", weights_only=True)["agent"]
    model_b = torch.load(b / "model.pt", weights_only=True)["agent"]
    assert_same_state(model_a, model_b)
    assert not (b / "checkpoint.pt").exists()  # a finished run drops its replay from disk


def assert_same_pretrain_run(a: Path, b: Path) -> None:
    """pretrain_autoencoder.py's finished runs `a` and `b` (the resumed one) are bitwise the same: logged points,
    encoder.pt's encoder and decoder; and `b` has dropped its checkpoint."""
    assert metrics(a) == metrics(b)
    ae_a, ae_b = (torch.load(run / "encoder.pt", weights_only=True) for run in (a, b))
    assert_same_state({k: ae_a[k] for k in ("encoder", "decoder")}, {k: ae_b[k] for k in ("encoder", "decoder")})
    assert not (b / "checkpoint.pt").exists()


def assert_sigterm_exit(returncode: int, out: str, err: str) -> Path:
    """A run stopped by SIGTERM: exit 143 without a traceback, one line naming its checkpoint and the --resume
    command, checkpoint.pt written and no final.json. Returns the run directory that line names."""
    assert returncode == 143, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, out[-2000:] + err[-3000:]
    (line,) = [x for x in out.splitlines() if "SIGTERM" in x]
    assert line.startswith("SIGTERM at step") and "checkpoint" in line and "--resume " in line, line
    run = Path(line.split("--resume ")[1])
    assert (run / "checkpoint.pt").is_file() and not (run / "final.json").exists()
    return run


def interrupt_and_resume(cmd: list[str], root: Path, total: int) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run `cmd` straight through into root/straight; run it again into root/cut, SIGTERM it from outside at its
    first progress line at or past step total // 2, check the checkpointed exit, then --resume it to the end.
    Returns the straight run's directory, the interrupted-and-resumed run's directory and the resumed process."""
    straight, cut = root / "straight", root / "cut"
    subprocess.run([*cmd, "--runs-dir", str(straight)], env=ENV, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*cmd, "--runs-dir", str(cut)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        step = step_of(line)
        if step is not None and step >= total // 2:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    directory = assert_sigterm_exit(proc.returncode, out, err)
    assert directory == run_dir(cut)
    # the replay's written part only: no tensor drags a larger storage (the whole preallocated buffer) into the file
    assert not oversized(torch.load(directory / "checkpoint.pt", weights_only=True))

    resumed = subprocess.run([*cmd, "--runs-dir", str(cut), "--resume", str(directory)], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    return run_dir(straight), directory, resumed

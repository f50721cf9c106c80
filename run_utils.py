"""Run bookkeeping shared by every training script, and no part of any algorithm (as CleanRL keeps `cleanrl_utils/`
beside its single-file algorithms): process set-up, the run directory and its files, progress lines, interrupts,
full-state checkpoint files and one-line errors. Networks, replay buffers, augmentations, updates and training loops
stay in each script, so an algorithm is still read in one file.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import difflib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"  # the full training state of a run, in its run directory


# ---------------------------------------------------------------------------------------------------------------
# Process set-up


def tune_allocator() -> bool:
    """Keep freed host memory in the process instead of returning it to the kernel.

    Why: a batched DrQ update allocates temporaries of 40-650 MB (K and M copies of a batch of 84x84 images). glibc
    serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it on free, so each
    update page-faults ~0.9 million fresh pages and spends more time in the kernel than in the convolutions
    (drq_sac K2M2 batch 128, one thread: 2449 ms -> 988 ms per update, 870k -> 1.7k page faults; README, results/).
    With mmap off and trimming off, freed blocks are reused. Arithmetic is unchanged. Harmless elsewhere: a no-op
    off glibc, and on CUDA it only affects host memory. Returns whether the setting took effect."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4  # glibc malloc.h
        # mallopt takes a C int: the largest one, not 1 << 40, which would wrap to 0 (= trim always).
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


# At import, so that every user of the training scripts' code gets it before its first large allocation: the
# scripts, and also benchmark_runtime.py, tests and harnesses that import them and call their update functions.
ALLOCATOR_TUNED = tune_allocator()


@dataclass
class RunArgs:
    """The flags of run bookkeeping, the same in every training script; each script's `Args(RunArgs)` adds the
    experiment's own (tyro lists these first in --help)."""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """use CUDA when torch sees a GPU (falls back to the CPU); passing --cuda explicitly makes a missing GPU an error"""
    track: bool = False
    """if toggled, log metrics to Weights and Biases as well as to {runs_dir}/{run_name}/metrics.jsonl"""
    wandb_project_name: str = "drq-reproduction"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    wandb_group: str | None = None
    """the wandb group (sweep.py sets one per sweep)"""
    wandb_mode: Literal["online", "offline", "disabled"] = "online"
    """wandb mode: `offline` needs no network or API key"""
    runs_dir: str = "runs"
    """folder that receives {runs_dir}/{run_name}/"""
    resume: str | None = None
    """run directory of an interrupted run ({runs_dir}/{run_name}): continue it in place from its checkpoint.pt"""
    checkpoint_interval: int = 10_000
    """steps (the script's unit) between full-state checkpoints (checkpoint.pt); SIGINT/SIGTERM also write one"""


@dataclass
class AgentRunArgs(RunArgs):
    """The bookkeeping flags of the scripts that train an agent, on top of RunArgs: videos, the saved model, and
    evaluating a saved one."""
    capture_video: bool = False
    """if toggled, record the first episode of every evaluation to {runs_dir}/{run_name}/videos"""
    save_model: bool = False
    """if toggled, save the trained networks (and what evaluating them needs) to {runs_dir}/{run_name}/model.pt"""
    eval_checkpoint: str | None = None
    """path of a model.pt or checkpoint.pt of this script to evaluate on the run's own task; no training happens"""


def get_device(cuda: bool, cuda_explicit: bool) -> torch.device:
    """--cuda is on by default and falls back to the CPU; naming it explicitly makes a missing GPU an error."""
    if cuda and torch.cuda.is_available():
        return torch.device("cuda")
    if cuda and cuda_explicit:
        fail("--cuda was given but torch sees no CUDA device; rerun with --no-cuda")
    return torch.device("cpu")


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ["torch", "gymnasium", "ale-py", "dm-control", "mujoco", "numpy", "tyro"]:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


# ---------------------------------------------------------------------------------------------------------------
# One-line errors


def fail(message: str):
    """Bad input: one line on stderr, exit 2, nothing written (call before the run directory exists)."""
    raise SystemExit(f"error: {message}")


def first_line(exc: Exception) -> str:
    """An exception's message cut to one short line, for one-line errors."""
    return (str(exc).strip().splitlines() or [""])[0][:120]


def require(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def positive(**values: int | float) -> None:
    for name, value in values.items():
        require(value > 0, f"--{name.replace('_', '-')} must be positive, got {value}")


def unknown_choice(kind: str, name: str, valid: list[str]):
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(valid)}"
    fail(f"unknown {kind} {name!r}; {hint}")


def check_runs_dir(runs_dir: str, flag: str = "--runs-dir") -> None:
    """`flag`: the option that named the folder, for the message (any folder a run will write to)."""
    path = Path(runs_dir)
    probe = path
    while not probe.exists():
        probe = probe.parent
    require(probe.is_dir() and os.access(probe, os.W_OK | os.X_OK), f"{flag} {runs_dir!r} cannot be written")


def check_tracking(track: bool, wandb_mode: str) -> None:
    if not track or wandb_mode != "online" or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    try:
        import wandb

        if wandb.Api().api_key:
            return
    except Exception:  # wandb raises many types when it finds no credentials
        pass
    fail("--track in online mode needs a wandb API key: run `wandb login`, or set WANDB_MODE=offline "
         "(or pass --wandb-mode offline)")


def check_run_flags(args, argv) -> torch.device:
    """The bookkeeping flags' one-line errors (--runs-dir, --track, --cuda) in that order; returns the device."""
    check_runs_dir(args.runs_dir)
    check_tracking(args.track, args.wandb_mode)
    return get_device(args.cuda, "--cuda" in argv)


# ---------------------------------------------------------------------------------------------------------------
# Files of a run


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLogger:
    """The output contract: runs/{run_name}/args.json, metrics.jsonl (one JSON object per logged point, keyed by
    global_step) and final.json (written last and atomically: its presence means the run finished), mirrored to
    wandb under --track. Resuming truncates metrics.jsonl to what the checkpoint had logged, so a curve has
    neither gaps nor duplicates, and reattaches to the same wandb run."""

    def __init__(self, args, run_dir: Path, record: dict, resume: dict | None = None):
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.header = {"algo": record["algo"], "run_name": record["run_name"], "code_version": code_version()}
        path = self.dir / "metrics.jsonl"
        if resume is None:
            atomic_write_text(self.dir / "args.json", json.dumps(record, indent=2, default=str))
            path.write_text("")
        else:
            size = path.stat().st_size if path.exists() else -1
            require(0 <= resume["metrics_bytes"] <= size, f"{path} holds {size} bytes but its checkpoint logged "
                    f"{resume['metrics_bytes']}: the run folder and its checkpoint.pt do not belong together")
            with open(path, "r+") as f:
                f.truncate(resume["metrics_bytes"])
        self.metrics = open(path, "a", buffering=1)
        self.wandb = None
        if args.track:
            import wandb

            run_id = resume["wandb_id"] if resume else None
            self.wandb = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, group=args.wandb_group,
                                    mode=args.wandb_mode, name=record["run_name"], config=record, dir=str(self.dir),
                                    id=run_id, resume="allow" if run_id else None)

    def log(self, step: int, **metrics: float) -> None:
        self.metrics.write(json.dumps({"global_step": step, "time": time.time(), **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def position(self) -> dict:
        """Where a resumed run continues the logs."""
        self.metrics.flush()
        return {"metrics_bytes": self.metrics.tell(), "wandb_id": self.wandb.id if self.wandb is not None else None}

    def finish(self, final: dict) -> Path:
        path = self.dir / "final.json"
        atomic_write_text(path, json.dumps({**final, **self.header}, indent=2))
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in final.items() if not isinstance(v, list)})
            self.wandb.finish()
        self.metrics.close()
        return path


def run_record(args, algo: str, run_name: str, device: torch.device, **resolved) -> dict:
    """args.json: every flag with its resolved value (no None where the script picks a default), the code and
    library versions, device and threads."""
    record = {**vars(args), **resolved, "algo": algo, "run_name": run_name, "code_version": code_version(),
              "versions": library_versions(), "device": str(device), "torch_threads": torch.get_num_threads()}
    return record


def run_location(args, env_id: str, ckpt: dict | None = None) -> tuple[str, Path]:
    """run_name and run directory: the resumed run's (`ckpt`), else {runs_dir}/{env_id}__{exp_name}__{seed}__{time}."""
    if ckpt:
        return ckpt["run_name"], Path(args.resume)
    run_name = f"{env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    return run_name, Path(args.runs_dir) / run_name


def final_record(args, env_id: str, returns: list[float], t_start: float, run_name: str, **fields) -> dict:
    """final.json: the run's task, algo and seed, the script's own `fields`, the last evaluation's returns, the wall
    time since `t_start`."""
    return {"env_id": env_id, "algo": args.exp_name, "seed": args.seed, **fields, "eval_episodes": args.eval_episodes,
            "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "returns": returns,
            "wall_time_s": time.time() - t_start, "run_name": run_name}


def log_evaluation(logger: RunLogger, step: int, returns: list[float], t0: float, **extra: float) -> None:
    """An evaluation's point in metrics.jsonl (mean and std of the returns, then `extra`) and its line (the time
    since `t0`)."""
    point = {"eval/episodic_return": float(np.mean(returns)), "eval/episodic_return_std": float(np.std(returns))}
    logger.log(step, **point, **extra)
    print(f"eval at step {step}: return {point['eval/episodic_return']:.1f} over {len(returns)} episodes "
          f"in {time.time() - t0:.0f} s", flush=True)


def checkpoint_evaluation(args, script: str, env_id: str, device: torch.device, t_start: float, play, **fields) -> dict:
    """The run folder of --eval-checkpoint: args.json, then final.json (with `fields` and the checkpoint's path) of the
    returns of `play(video_path or None)`; nothing is trained."""
    run_name, run_dir = run_location(args, env_id)
    logger = RunLogger(args, run_dir, run_record(args, script, run_name, device))
    returns = play(run_dir / "videos" / "eval_checkpoint.mp4" if args.capture_video else None)
    final = {**final_record(args, env_id, returns, t_start, run_name, **fields),
             "evaluated_checkpoint": str(args.eval_checkpoint)}
    logger.finish(final)
    print(f"checkpoint {args.eval_checkpoint}: mean return {final['mean_return']:.1f} over {len(returns)} "
          f"episodes -> {run_dir}", flush=True)
    return final


class Run:
    """One training run's bookkeeping, none of it part of the algorithm: where the run lives (a new
    {runs_dir}/{run_name}, or the resumed run's folder), args.json and metrics.jsonl (`logger`), the training loop's
    counters (`loop`: `loop_start` for a new run, the checkpoint's for a resumed one; saved whole in each
    checkpoint), SIGINT/SIGTERM (`interrupts`), progress lines, checkpoint.pt, and the end (model.pt, final.json)."""

    def __init__(self, args, script: str, env_id: str, device: torch.device, ckpt: dict | None, plan: str,
                 loop_start: dict, t_start: float, **resolved):
        self.args, self.script, self.env_id = args, script, env_id
        self.name, self.dir = run_location(args, env_id, ckpt)
        announce(script, env_id, device, self.dir,
                 plan + (f", resuming at step {ckpt['loop']['global_step']}" if ckpt else ""))
        self.record = run_record(args, script, self.name, device, **resolved)
        self.logger = RunLogger(args, self.dir, self.record, resume=ckpt["logger"] if ckpt else None)
        self.interrupts = Interrupts()
        self.loop = ckpt["loop"] if ckpt else {**copy.deepcopy(loop_start),
                                               "next_checkpoint": args.checkpoint_interval, "elapsed": 0.0}
        self.t_start = t_start - self.loop["elapsed"]  # wall time counts the earlier segments of a resumed run
        learning_starts = resolved.get("learning_starts", args.learning_starts)  # the script's resolved value
        self.progress = Progress(args.total_timesteps, learning_starts, self.loop["global_step"])

    def checkpoint(self, **state) -> Path:
        """checkpoint.pt: the flags, the script's `state` (agent, replay, envs), the RNGs, `loop`, the logs' position."""
        return save_run_checkpoint(self.dir, self.script, self.args, self.name, self.loop, self.t_start,
                                   self.logger, **state)

    def exit_interrupted(self, step: int, state) -> None:
        """After SIGINT/SIGTERM outside checkpoint_when_due: checkpoint(**state()), then exit with the command that
        resumes the run."""
        self.interrupts.exit(step, self.checkpoint(**state()), resume_command(self.dir))

    def checkpoint_when_due(self, step: int, state) -> None:
        """Every --checkpoint-interval steps, and after SIGINT/SIGTERM (then exits): checkpoint(**state())."""
        checkpoint_when_due(step, self.loop, self.args.checkpoint_interval, self.interrupts,
                            lambda: self.checkpoint(**state()), self.dir)

    def log_episode(self, step: int, episode_return: float, episode_length: int, metrics: dict) -> None:
        """An episode's point in metrics.jsonl, with the latest update's `metrics` (tensors: synced here only)."""
        sps = step / (time.time() - self.t_start)
        self.logger.log(step, **{"charts/episodic_return": episode_return, "charts/episodic_length": episode_length,
                                 "charts/SPS": sps}, **{key: value.item() for key, value in metrics.items()})
        print(self.progress.line(step, episode_return), flush=True)

    def save_model(self, **state) -> None:
        """--save-model: model.pt, the flags and resolved settings with `state` (the trained networks)."""
        if self.args.save_model:
            save_checkpoint(self.dir / "model.pt", self.script, {"args": vars(self.args), "run_name": self.name,
                                                                 **self.record, **state})

    def finish(self, returns: list[float], **fields) -> dict:
        """final.json (final_record with the script's `fields`); the checkpoint goes: its replay need not stay."""
        final = final_record(self.args, self.env_id, returns, self.t_start, self.name, **fields)
        self.logger.finish(final)
        (self.dir / CHECKPOINT).unlink(missing_ok=True)
        print(f"final: mean return {final['mean_return']:.1f} +- {final['std_return']:.1f} -> {self.dir}", flush=True)
        return final


# ---------------------------------------------------------------------------------------------------------------
# Progress a person can follow


class Progress:
    """Progress lines with an ETA from the learning phase's own speed: the random-action phase before learning
    starts is several times faster and would make the first estimates far too short."""

    def __init__(self, total: int, learning_starts: int, step: int = 0):
        self.total, self.learning_starts = total, learning_starts
        self.t0, self.s0 = time.time(), step
        self.learn_t0, self.learn_s0 = (self.t0, step) if step >= learning_starts else (None, None)
        self.last_line = self.t0

    def update(self, step: int) -> None:
        if self.learn_t0 is None and step >= self.learning_starts:
            self.learn_t0, self.learn_s0 = time.time(), step

    def due(self, seconds: float = 20.0) -> bool:
        return time.time() - self.last_line >= seconds

    def line(self, step: int, recent_return: float | None) -> str:
        self.last_line = now = time.time()
        ret = "n/a" if recent_return is None else f"{recent_return:.1f}"
        if self.learn_t0 is None or step <= self.learn_s0 or now - self.learn_t0 < 1.0:
            sps = (step - self.s0) / max(now - self.t0, 1e-9)
            eta = "after learning starts"
        else:
            sps = (step - self.learn_s0) / (now - self.learn_t0)
            eta = f"{(self.total - step) / max(sps, 1e-9) / 60:.1f} min"
        return f"step {step}/{self.total} | SPS {sps:.1f} | return {ret} | ETA {eta}"


def announce(script: str, env_id: str, device: torch.device, run_dir: Path, plan: str) -> None:
    print(f"{script} on {env_id} | device {device}, {torch.get_num_threads()} threads | run dir {run_dir} | {plan}",
          flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Interrupts: SIGINT/SIGTERM finish the current step, write a checkpoint and exit 130/143


class Interrupts:
    """Records SIGINT/SIGTERM instead of raising, so the training loop can stop at a consistent point; a second
    signal exits at once (without a checkpoint)."""

    def __init__(self):
        self.signum: int | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle)

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: exiting without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def exit(self, step: int, path: Path, resume_command: str):
        name = signal.Signals(self.signum).name
        print(f"{name} at step {step}: checkpoint {path}; continue with: {resume_command}", flush=True)
        raise SystemExit(128 + self.signum)


def resume_command(run_dir: Path) -> str:
    return f"python {Path(sys.argv[0]).name} --resume {run_dir}"


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint files


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": plain(np.random.get_state(legacy=False)),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, script: str, state: dict) -> None:
    """Atomically (temporary file, then rename): a run killed while writing keeps its previous checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain({"script": script, **state}), tmp)
    os.replace(tmp, path)


def _plain(value):
    """numpy values -> tensors and python types, so the file loads with weights_only=True; a tensor that is a slice of
    a larger one (the written part of a replay buffer) is copied, since torch.save writes a view's whole storage."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.untyped_storage().nbytes() > value.nbytes else value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def plain(state: dict) -> dict:
    return _plain(state)


def numpy_state(state):
    """The inverse of `plain` for a numpy random state: tensors back to arrays."""
    if isinstance(state, torch.Tensor):
        return state.numpy()
    if isinstance(state, dict):
        return {k: numpy_state(v) for k, v in state.items()}
    return state


def load_checkpoint(path: str | Path, script: str, device: torch.device | str = "cpu") -> dict:
    """Loads with weights_only=True (a checkpoint from elsewhere cannot run code); one-line errors for a missing,
    corrupt or foreign file."""
    path = Path(path)
    require(path.is_file(), f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code: torch raises many types
        fail(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {first_line(exc)})")
    require(isinstance(ckpt, dict) and "script" in ckpt, f"{str(path)!r} is not a checkpoint of this project")
    require(ckpt["script"] == script, f"{str(path)!r} is a checkpoint of {ckpt['script']}.py, not of {script}.py")
    return ckpt


def resume_args(args, ckpt: dict, argv: list[str], fields) -> object:
    """The run's own flags, with the command line allowed to change only --resume and bookkeeping flags; any other
    flag given explicitly that differs from the run's is a one-line error."""
    saved = ckpt["args"]
    free = {"resume", "checkpoint_interval", "track", "wandb_mode", "wandb_project_name", "wandb_entity",
            "wandb_group", "capture_video", "cuda", "runs_dir"}
    given = {a[2:].split("=")[0].replace("-", "_").removeprefix("no_") for a in argv if a.startswith("--")}
    for name in fields:
        if name in given and name not in free and name in saved and getattr(args, name) != saved[name]:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)!r} conflicts with the checkpoint's "
                 f"{saved[name]!r}; drop it to resume the run as it was")
    for name in fields:
        if name not in free and name in saved:
            setattr(args, name, saved[name])
    return args


def resume(args, argv: list[str], script: str, fields) -> dict | None:
    """--resume RUN_DIR: the run's checkpoint, with the run's own flags put back into `args` (resume_args); None
    without --resume."""
    if not args.resume:
        return None
    ckpt = load_checkpoint(Path(args.resume) / CHECKPOINT, script)
    resume_args(args, ckpt, argv, fields)
    return ckpt


def save_run_checkpoint(run_dir: Path, script: str, args, run_name: str, loop: dict, t_start: float,
                        logger: RunLogger, **state) -> Path:
    """The full training state in {run_dir}/checkpoint.pt: the flags, the script's `state` (agent, replay, envs), the
    RNGs, the loop's counters with the time trained so far, and where the logs stand; returns its path."""
    path = run_dir / CHECKPOINT
    save_checkpoint(path, script, {"args": vars(args), "run_name": run_name, **state, "rng": rng_state(),
                                   "loop": {**loop, "elapsed": time.time() - t_start}, "logger": logger.position()})
    return path


def parts_state(obj, names: list[str] | None = None) -> dict:
    """The checkpoint state of `obj`'s named parts (default: each field of the dataclass `obj` that holds a module, an
    optimizer or a tensor): state_dict() of a module or optimizer, a copy of a tensor."""
    if names is None:
        names = [field.name for field in dataclasses.fields(obj) if isinstance(
            getattr(obj, field.name), (torch.nn.Module, torch.optim.Optimizer, torch.Tensor))]
    parts = {name: getattr(obj, name) for name in names}
    return {name: part.detach().clone() if isinstance(part, torch.Tensor) else part.state_dict()
            for name, part in parts.items()}


def load_parts_state(obj, state: dict) -> None:
    """The inverse of parts_state, in the saved order."""
    for name, value in state.items():
        part = getattr(obj, name)
        if isinstance(part, torch.Tensor):
            with torch.no_grad():
                part.copy_(value)
        else:
            part.load_state_dict(value)


def rows_state(buffer, rows: dict[str, int], counters: list[str]) -> dict:
    """A replay buffer's part of a checkpoint: the first rows[name] rows of each named array (the written part, as
    stored) and the named counters."""
    return {name: getattr(buffer, name)[:n] for name, n in rows.items()} | {c: getattr(buffer, c) for c in counters}


def load_rows_state(buffer, state: dict, rows: list[str]) -> None:
    """The inverse of rows_state: the named arrays' rows written back in place, every other entry set."""
    for name, value in state.items():
        if name in rows:
            target = getattr(buffer, name)
            tensor_into_array = isinstance(target, np.ndarray) and isinstance(value, torch.Tensor)
            target[: len(value)] = value.numpy() if tensor_into_array else value
        else:
            setattr(buffer, name, value)


def checkpoint_to_evaluate(args, argv: list[str], script: str) -> tuple[dict, torch.device]:
    """--eval-checkpoint PATH: the checkpoint (model.pt or checkpoint.pt of `script`) and the device, after the
    one-line checks of the flags an evaluation uses."""
    positive(eval_episodes=args.eval_episodes)
    ckpt = load_checkpoint(args.eval_checkpoint, script)
    return ckpt, check_run_flags(args, argv)


def checkpoint_when_due(step: int, loop: dict, interval: int, interrupts: Interrupts, save, run_dir: Path) -> None:
    """In the training loop: `save()` writes the checkpoint every `interval` steps (loop["next_checkpoint"]) and
    after SIGINT/SIGTERM, which then ends the run with the command that resumes it."""
    if interrupts.requested or step >= loop["next_checkpoint"]:
        path = save()
        if interrupts.requested:
            interrupts.exit(step, path, resume_command(run_dir))
        loop["next_checkpoint"] += interval

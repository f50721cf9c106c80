"""Run a grid of training runs (script x env x seed x flags) on Ray: a laptop or a cluster, same command.

    python sweep.py --preset atari100k --dry-run                     # list the runs and their count
    python sweep.py --preset atari100k --cpus-per-run 1              # laptop: starts a local Ray itself
    python sweep.py --preset dmc-planet --address HEAD_IP:6379 --gpus-per-run 0.25 --cpus-per-run 2
    python sweep.py --scripts drq_dqn.py --envs Pong Breakout --seeds 1-5 -- drq-eps --batch-size 64

Every run is a subprocess of an unchanged training script,
`python <script> [<recipe>] --seed S --env-id E --runs-dir <sweep-dir>/<run-id> <flags>`, with its own runs folder
and log (`<sweep-dir>/<run-id>/log.txt`), where run-id = `<script>[.<recipe>]__<env>__<seed>__<hash of the flags>`.
Before anything starts (and in --dry-run), every run's command line goes through its script's own argument parser,
so a typo fails the whole sweep with one line instead of hundreds of failed runs. A run is finished when
`<sweep-dir>/<run-id>/*/final.json` exists (the scripts write it last and atomically, CONTRIBUTING.md), so the
sweep is resumable and idempotent: finished runs are skipped, a failed or killed run is started again (up to
--max-retries times within one invocation, then reported with the tail of its log), and running the same command
again after an interruption finishes only what is missing. A run started again continues from its latest
checkpoint (`--resume <its run folder>`) where its script supports that. Nothing finished is ever deleted or
overwritten. `<sweep-dir>/runs/` holds one link per finished run, the layout report.py reads (`--report` runs it).

On a cluster every node must see the same paths (a shared file system holding this checkout and the sweep folder)
and a Python with the project's requirements.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent

# The six PlaNet-benchmark tasks of the DrQ paper's Table 1 (spec §1.5).
PLANET_TASKS = ("cartpole-swingup", "reacher-easy", "cheetah-run", "finger-spin", "ball_in_cup-catch", "walker-walk")
# The paper's K/M ablations used batch 128 (spec §1.4, §1.6); its main results use 512.
ABLATION_FLAGS = ("--batch-size", "128")
# Flags that only route wandb logging: they reach every run but do not change what a run computes, so they are
# left out of the run id (adding --track when resuming must not start the sweep again).
TRACKING_VALUE_FLAGS = ("--wandb-group", "--wandb-project-name", "--wandb-entity", "--wandb-mode")
# Flags sweep.py sets per run itself.
OWNED_FLAGS = ("--seed", "--env-id", "--runs-dir", "--resume")
CHECKPOINT = "checkpoint.pt"  # a run's full training state, in its run folder until the run finishes (run_utils)
LOG_TAIL_LINES = 20
# A run asked to stop (SIGTERM) writes its checkpoint before it exits; a full replay buffer can take a while.
TERM_GRACE_S = 120


def atari_games() -> tuple[str, ...]:
    """The 26 Atari 100k games: the rows of the project's reference table."""
    with open(PROJECT_DIR / "reference" / "atari_100k_scores.csv", newline="") as f:
        return tuple(row["game"] for row in csv.DictReader(f))


@dataclass(frozen=True)
class Variant:
    """One column of a grid: a script, the named recipe of the script (its subcommand; "" for the script's default
    or a script without recipes) and the flags that change the recipe's values."""

    script: str
    flags: tuple[str, ...] = ()
    label: str = ""
    recipe: str = ""


@dataclass(frozen=True)
class Preset:
    description: str
    variants: tuple[Variant, ...]
    envs: tuple[str, ...]
    seeds: tuple[int, ...]


def presets() -> dict[str, Preset]:
    return {
        "atari100k": Preset(
            "Atari 100k: 26 games x 5 seeds x {NDDQN (recipe efficient-dqn), DrQ (drq: the paper's settings), "
            "DrQ(eps) (drq-eps: dopamine's DrQ_eps.gin and agent)}",
            (Variant("nddqn_atari.py", label="NDDQN", recipe="efficient-dqn"),
             Variant("drq_dqn.py", label="DrQ", recipe="drq"),
             Variant("drq_dqn.py", label="DrQ(eps)", recipe="drq-eps")),
            atari_games(), tuple(range(1, 6))),
        "dmc-planet": Preset(
            "DMC PlaNet benchmark (Table 1): 6 tasks x 10 seeds x {DrQ (K=2,M=2), SAC pixels without augmentation, "
            "SAC+AE of Yarats et al. (sac_ae.py), SAC state}",
            # Table 1's SAC+AE; sac_ae_frozen.py (the reproduction report's) needs a pretrained encoder per task.
            (Variant("drq_sac.py", label="DrQ"), Variant("sac_pixels.py", label="SAC pixels"),
             Variant("sac_ae.py", label="SAC-AE"), Variant("sac_state.py", label="SAC state")),
            PLANET_TASKS, tuple(range(1, 11))),
        "report-ablation": Preset(
            "DrQ K/M ablation: K, M in {1,2}^2 on cartpole-swingup x 10 seeds, batch 128 as the paper's ablations",
            tuple(Variant("drq_sac.py", ("--k", str(k), "--m", str(m), *ABLATION_FLAGS), f"DrQ K={k},M={m}")
                  for k in (1, 2) for m in (1, 2)),
            ("cartpole-swingup",), tuple(range(1, 11))),
    }


@dataclass(frozen=True)
class Run:
    script: str
    env_id: str
    seed: int
    flags: tuple[str, ...]
    label: str = ""
    recipe: str = ""

    @property
    def run_id(self) -> str:
        name = Path(self.script).stem + (f".{self.recipe}" if self.recipe else "")
        return f"{_safe(name)}__{_safe(self.env_id)}__{self.seed}__{flag_hash(self.flags)}"

    @property
    def variant_args(self) -> list[str]:
        """The recipe and flags this run adds to its script: what names it in an error."""
        return [*([self.recipe] if self.recipe else []), *self.flags]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def flag_hash(flags: tuple[str, ...]) -> str:
    return hashlib.sha1(json.dumps(list(flags)).encode()).hexdigest()[:8]


def parse_seeds(tokens: list[str]) -> tuple[int, ...]:
    """`1-5`, `1,3,7`, `1-3,8 10` -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in ",".join(tokens).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if m is None:
            raise SystemExit(f"error: bad seed '{part}' (use e.g. 1-5 or 1,3,7)")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise SystemExit(f"error: empty seed range '{part}'")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise SystemExit("error: no seeds given")
    return tuple(sorted(seeds))


def split_tracking(flags: list[str]) -> tuple[list[str], list[str], bool]:
    """Separate pass-through flags into (run flags, wandb routing flags, --track given)."""
    run_flags, tracking, track, i = [], [], False, 0
    while i < len(flags):
        f = flags[i]
        name = f.split("=", 1)[0]
        if name in OWNED_FLAGS:
            raise SystemExit(f"error: {name} is set by sweep.py for every run (use --seeds / --envs / --sweep-dir)")
        if f == "--track":
            track = True
        elif f == "--no-track":
            track = False
        elif name in TRACKING_VALUE_FLAGS:
            if "=" in f:
                tracking.append(f)
            elif i + 1 < len(flags):
                tracking += [f, flags[i + 1]]
                i += 1
            else:
                raise SystemExit(f"error: {f} needs a value")
        else:
            run_flags.append(f)
        i += 1
    return run_flags, tracking, track


def expand_grid(variants, envs, seeds, extra_flags=()) -> list[Run]:
    """Every (variant, env, seed), seeds outermost so that a half-finished sweep holds whole seeds of every cell."""
    runs, seen = [], set()
    for seed in seeds:
        for env in envs:
            for v in variants:
                run = Run(v.script, env, seed, tuple(v.flags) + tuple(extra_flags), v.label, v.recipe)
                if run.run_id not in seen:
                    seen.add(run.run_id)
                    runs.append(run)
    return runs


def build_grid(args, passthrough: list[str]) -> tuple[list[Run], list[str], bool]:
    # As on a script's own command line, a recipe comes first: `-- drq-eps --batch-size 64`.
    recipe = passthrough[0] if passthrough and not passthrough[0].startswith("-") else ""
    run_flags, tracking, track = split_tracking(passthrough[1:] if recipe else passthrough)
    if args.preset:
        table = presets()
        if args.preset not in table:
            raise SystemExit(f"error: unknown preset '{args.preset}' (known: {', '.join(table)})")
        if recipe:
            raise SystemExit(f"error: preset {args.preset} names its variants' recipes; a recipe after `--` "
                             f"('{recipe}') is for an ad-hoc grid (--scripts, --envs)")
        p = table[args.preset]
        variants = p.variants
        if args.scripts:
            variants = tuple(v for v in variants if v.script in args.scripts)
            if not variants:
                raise SystemExit(f"error: preset {args.preset} has no variant of {' '.join(args.scripts)}")
        envs = tuple(args.envs) if args.envs else p.envs
        seeds = parse_seeds(args.seeds) if args.seeds else p.seeds
    else:
        if not args.scripts or not args.envs:
            raise SystemExit("error: give --preset NAME, or --scripts and --envs (and --seeds) for an ad-hoc grid")
        variants = tuple(Variant(s, recipe=recipe) for s in args.scripts)
        envs = tuple(args.envs)
        seeds = parse_seeds(args.seeds or ["1"])
    return expand_grid(variants, envs, seeds, run_flags), tracking, track or args.track


# ---------------------------------------------------------------------------------------------------------------
# Per-run state on disk


def run_dir(sweep_dir: Path, run: Run) -> Path:
    return sweep_dir / run.run_id


def finished_final(sweep_dir: Path, run: Run) -> Path | None:
    """The run's final.json if it finished (any attempt), else None."""
    found = sorted(run_dir(sweep_dir, run).glob("*/final.json"))
    return found[0] if found else None


def latest_checkpoint(sweep_dir: Path, run: Run) -> Path | None:
    """The newest checkpoint of an unfinished run (a finished run has deleted its own), else None."""
    found = list(run_dir(sweep_dir, run).glob(f"*/{CHECKPOINT}"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass(frozen=True)
class Launch:
    """What the command lines of a sweep's runs share."""

    sweep_dir: Path
    script_dir: Path
    tracking: tuple[str, ...] = ()
    track: bool = False
    group: str = ""
    resumable: frozenset[str] = frozenset()  # scripts whose parser takes --resume RUN_DIR

    def script_args(self, run: Run) -> list[str]:
        """Everything after the script, --resume aside; the recipe first, since it is the script's subcommand."""
        args = [*([run.recipe] if run.recipe else []), "--seed", str(run.seed), "--env-id", run.env_id,
                "--runs-dir", str(run_dir(self.sweep_dir, run)), *run.flags, *self.tracking]
        if self.track:
            args.append("--track")
            if not any(t.split("=", 1)[0] == "--wandb-group" for t in self.tracking):
                args += ["--wandb-group", self.group]
        return args

    def resume_from(self, run: Run) -> Path | None:
        """The run folder to continue: the checkpoint a killed, failed or interrupted attempt left behind. The
        script keeps writing there (it was made under this run's --runs-dir)."""
        if run.script not in self.resumable:
            return None
        ckpt = latest_checkpoint(self.sweep_dir, run)
        return ckpt.parent if ckpt is not None else None

    def command(self, run: Run) -> list[str]:
        resume = self.resume_from(run)
        return ["python", str(self.script_dir / run.script), *self.script_args(run),
                *(["--resume", str(resume)] if resume is not None else [])]


def check_runs(runs: list[Run], launch: Launch) -> frozenset[str]:
    """Put every run's command line through its script's own argument parser, before anything starts; the first
    script missing, failing to import or rejecting a run ends the sweep with one line. Returns the scripts whose
    parser takes --resume.

    Runs that differ only in seed or runs folder are parsed once: those values are sweep.py's own (an int, a path),
    the same type in every run, unlike the env id, which a script may restrict to a set of names."""
    missing = sorted({r.script for r in runs if not (launch.script_dir / r.script).is_file()})
    if missing:
        raise SystemExit(f"error: script(s) not found in {launch.script_dir}: {', '.join(missing)}")
    resumable, parsed = set(), set()
    with _on_sys_path(launch.script_dir):
        modules = {script: _import_script(launch.script_dir / script) for script in sorted({r.script for r in runs})}
        for run in runs:
            key = (run.script, run.recipe, run.flags, run.env_id)
            if key in parsed:
                continue
            parsed.add(key)
            args, error = _parse_with_script(modules[run.script], launch.script_args(run))
            if error is not None:
                raise SystemExit(f"error: run {run.run_id} ({shlex.join([run.script, *run.variant_args])}): {error}")
            if hasattr(args, "resume"):
                resumable.add(run.script)
    return frozenset(resumable)


@contextlib.contextmanager
def _on_sys_path(folder: Path):
    """A script imports its siblings (run_utils) as it would when run from its folder."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def _import_script(path: Path):
    name = f"_sweep_checked_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and tyro look a class's module up there
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of a script's import is the same error
        del sys.modules[name]
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SystemExit(f"error: cannot import {path.name} to check the runs' flags: {type(exc).__name__}: {first}")
    if not hasattr(module, "parse_args") and not hasattr(module, "Args"):
        raise SystemExit(f"error: {path.name} has neither parse_args(argv) nor an Args dataclass, so sweep.py "
                         "cannot check its flags")
    return module


def _parse_with_script(module, argv: list[str]):
    """(parsed args, None), or (None, the parser's first error on one line)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if hasattr(module, "parse_args"):
                return module.parse_args(argv), None
            import tyro

            return tyro.cli(module.Args, args=argv), None
    except SystemExit as exc:
        return None, first_error_line(out.getvalue()) or f"its parser exited with {exc.code} and no message"
    except Exception as exc:  # noqa: BLE001 - a parser that raises rejects the run as much as one that exits
        return None, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RULE = re.compile(r"[-─━═╭╮╰╯│┃|+ ]*[-─━═]{3,}[-─━═╭╮╰╯│┃|+ ]*")


def first_error_line(text: str) -> str:
    """The first error a parser printed, as one line. argparse ends its usage with `prog: error: MESSAGE`; tyro
    prints a box, a title, a rule, then the message, which it wraps over several lines at the console width."""
    lines = [_ANSI.sub("", line).strip().strip("│┃|").strip() for line in text.splitlines()]
    for line in lines:
        m = re.search(r"\berror: (.+)", line)
        if m:
            return m[1]
    rules = [i for i, line in enumerate(lines) if _RULE.fullmatch(line)]
    message = []
    for line in lines[rules[0] + 1:] if rules else lines:
        if message and (not line or _RULE.fullmatch(line)):
            break
        if line:
            message.append(line)
    return " ".join(message)


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64_000))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def run_subprocess(cmd: list[str], run_dir_: str, log_path: str, env_vars: dict, attempt: int,
                   timeout_s: float | None, stop_file: str | None = None) -> dict:
    """Body of the Ray task: run one training script to completion on whichever node Ray picked."""
    import platform

    t0 = time.time()
    cmd = [sys.executable if c == "python" and i == 0 else c for i, c in enumerate(cmd)]
    env = {**os.environ, **env_vars}
    Path(run_dir_).mkdir(parents=True, exist_ok=True)
    node = ""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - also runnable without Ray
        pass
    with open(log_path, "a", buffering=1) as log:
        log.write(f"\n=== attempt {attempt} on {platform.node()} (node {node[:12]}) at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        log.flush()
        launch = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd] if _LINUX else cmd
        proc = subprocess.Popen(launch, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_DIR),
                                start_new_session=True)
        try:
            # An interrupted sweep.py asks its runs to stop through a file (on the shared file system) rather
            # than ray.cancel, which can crash the driver of Ray 2.60 when a cancelled task's reply arrives late.
            deadline = None if timeout_s is None else t0 + timeout_s
            while (rc := proc.poll()) is None:
                if deadline is not None and time.time() > deadline:
                    _kill_group(proc)
                    log.write(f"=== killed: the run exceeded --run-timeout {timeout_s:.0f} s\n")
                    rc = "timeout"
                    break
                if stop_file is not None and os.path.exists(stop_file):
                    _kill_group(proc)
                    log.write("=== killed: the sweep was interrupted\n")
                    rc = "interrupted"
                    break
                time.sleep(0.5)
        except BaseException:
            # Ray shutting the worker down: never leave the script running.
            _kill_group(proc)
            log.write("=== killed: the worker was stopped\n")
            raise
        log.write(f"=== exit code {rc} after {time.time() - t0:.1f} s\n")
    return {"rc": rc, "node": node, "host": platform.node(), "wall_s": time.time() - t0}


# Linux: the training script gets SIGKILL when its Ray worker dies (driver killed, node lost), so no orphan keeps
# training and later writes into a folder that a resumed sweep is already re-running. PR_SET_PDEATHSIG survives
# exec; setting it in a tiny launcher that then execs the script avoids preexec_fn, unsafe in a threaded Ray worker.
_LINUX = sys.platform.startswith("linux")
_DIE_WITH_PARENT = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):  # the worker died before prctl
    sys.exit(137)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------------------------
# Progress and summary


def fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressBar:
    """One line: a bar over all runs of the grid, done/running/queued/failed counts and an ETA. The ETA assumes
    every run takes the mean duration of the runs finished so far in this invocation, with `slots` runs at once."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.t0, self.last, self.last_print = time.time(), "", 0.0
        self.durations: list[float] = []
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def eta(self, ages: list[float], queued: int, slots: int) -> float | None:
        if not ages and not queued:
            return 0.0
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return (sum(max(mean - a, 0.0) for a in ages) + queued * mean) / max(slots, 1)

    def line(self, done: int, ages: list[float], failed: int, queued: int, slots: int) -> str:
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        return (f"[{bar}] {done}/{self.total} done | {len(ages)} running | {queued} queued | {failed} failed | "
                f"elapsed {fmt_duration(time.time() - self.t0)} | ETA {fmt_duration(self.eta(ages, queued, slots))}")

    def update(self, done: int, ages: list[float], failed: int, queued: int, slots: int, force: bool = False):
        text = self.line(done, ages, failed, queued, slots)
        now = time.time()
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self.last)))
        elif text.split(" | elapsed")[0] != self.last.split(" | elapsed")[0] or force or now - self.last_print > 60:
            self.stream.write(text + "\n")  # a log file: a line per change, else one a minute
        else:
            return
        self.stream.flush()
        self.last, self.last_print = text, now

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


def summary_table(runs: list[Run], sweep_dir: Path) -> str:
    """Per (variant, env): finished seeds and mean +- std of the runs' final mean_return."""
    cells: dict[tuple, list] = {}
    for run in runs:
        key = (Path(run.script).stem, run.label or " ".join(run.flags) or "-", run.env_id)
        cell = cells.setdefault(key, [0, []])
        cell[0] += 1
        final = finished_final(sweep_dir, run)
        if final is not None:
            try:
                cell[1].append(float(json.loads(final.read_text())["mean_return"]))
            except (OSError, ValueError, KeyError, TypeError):
                cell[1].append(float("nan"))
    rows = [("script", "variant", "env", "done", "mean_return (mean ± std over seeds)")]
    for (script, variant, env), (n, rets) in cells.items():
        if rets:
            mean = sum(rets) / len(rets)
            std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)) if len(rets) > 1 else 0.0
            score = f"{mean:.1f} ± {std:.1f}"
        else:
            score = "-"
        rows.append((script, variant, env, f"{len(rets)}/{n}", score))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def link_finished_runs(runs: list[Run], sweep_dir: Path) -> Path:
    """`<sweep-dir>/runs/<run-id>` -> the finished run folder: the one-level layout report.py reads."""
    view = sweep_dir / "runs"
    view.mkdir(parents=True, exist_ok=True)
    for run in runs:
        final = finished_final(sweep_dir, run)
        link = view / run.run_id
        if final is not None and not link.exists():
            if link.is_symlink():  # dangling
                link.unlink()
            link.symlink_to(Path("..") / run.run_id / final.parent.name, target_is_directory=True)
    return view


# ---------------------------------------------------------------------------------------------------------------
# Ray


def connect_ray(address: str | None, num_cpus: int | None, num_gpus: float | None):
    """Returns (ray module, whether this call started Ray). Reuses Ray if this process already initialised it."""
    if address is None:
        # A laptop sweep needs no open ports: with this Ray binds every service to 127.0.0.1 (it must be set
        # before ray is imported; Ray reads it at import time).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray, False
    kwargs = dict(log_to_driver=False, logging_level="WARNING", include_dashboard=False)
    if address is not None:
        # `ray start` enables token auth when ~/.ray/auth_token exists (Ray >= 2.50), but ray.init with an explicit
        # address only sends the token for address="auto"; do what "auto" does.
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except Exception:  # noqa: BLE001 - older/newer Ray without this helper
            pass
        kwargs.pop("include_dashboard")
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    return ray, True


def capacity(ray, cpus_per_run: float, gpus_per_run: float) -> int:
    """How many runs the cluster can hold at once now; submitting only that many keeps `running` honest and lets
    retries queue behind first attempts. Re-read every loop so that nodes joining later are used."""
    res = ray.cluster_resources()
    cap = math.inf
    if cpus_per_run > 0:
        cap = min(cap, math.floor(res.get("CPU", 0) / cpus_per_run + 1e-9))
    if gpus_per_run > 0:
        cap = min(cap, math.floor(res.get("GPU", 0) / gpus_per_run + 1e-9))
    return max(1, int(cap)) if math.isfinite(cap) else 1_000_000


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]):
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    else:
        passthrough = []
    p = argparse.ArgumentParser(
        prog="sweep.py", description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Flags after `--` go to every run unchanged (e.g. -- --total-timesteps 20000 --no-cuda).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("grid")
    g.add_argument("--preset", metavar="NAME", help="named grid: " + ", ".join(presets()) + " (see --list-presets)")
    g.add_argument("--scripts", nargs="+", metavar="SCRIPT",
                   help="training scripts (ad-hoc grid; with --preset: keep only these)")
    g.add_argument("--envs", nargs="+", metavar="ENV",
                   help="env ids (ad-hoc grid; with --preset: replace the preset's)")
    g.add_argument("--seeds", nargs="+", metavar="SEEDS", help="seeds: 1-5, 1,3,7 (default: the preset's, or 1)")
    g.add_argument("--list-presets", action="store_true", help="print the presets and their run counts")
    g.add_argument("--dry-run", action="store_true", help="print the runs, their status and count; run nothing")
    g.add_argument("--sweep-dir", metavar="DIR", help="where runs go (default: sweeps/<preset> or sweeps/adhoc)")
    g.add_argument("--script-dir", metavar="DIR", default=str(PROJECT_DIR),
                   help="folder holding the training scripts")
    r = p.add_argument_group("resources")
    r.add_argument("--address", metavar="HOST:PORT",
                   help="Ray cluster to submit to (HEAD_IP:PORT or auto); default: start a local Ray")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    r.add_argument("--num-gpus", type=float, help="GPUs of the local Ray (default: detected)")
    r.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves per run (default 1)")
    r.add_argument("--gpus-per-run", type=float, default=0.0,
                   help="GPUs per run, fractional to pack several runs on one GPU (e.g. 0.25); 0 = CPU only")
    r.add_argument("--threads-per-run", type=int,
                   help="torch/OMP/MKL threads of each run (default: ceil(--cpus-per-run))")
    r.add_argument("--max-retries", type=int, default=1, help="extra attempts for a failed run (default 1)")
    r.add_argument("--run-timeout", type=float, metavar="SECONDS",
                   help="kill an attempt after this many seconds (default: none)")
    o = p.add_argument_group("output")
    o.add_argument("--track", action="store_true", help="pass --track to every run (wandb)")
    o.add_argument("--wandb-group", help="wandb group shared by the sweep's runs (default: the sweep folder name)")
    o.add_argument("--report", action="store_true", help="run report.py on the finished runs at the end")
    args = p.parse_args(argv)
    if args.cpus_per_run < 0 or args.gpus_per_run < 0 or args.max_retries < 0:
        raise SystemExit("error: --cpus-per-run, --gpus-per-run and --max-retries must be >= 0")
    if args.gpus_per_run > 1 and args.gpus_per_run != int(args.gpus_per_run):
        raise SystemExit("error: --gpus-per-run above 1 must be a whole number")
    if args.threads_per_run is not None and args.threads_per_run < 1:
        raise SystemExit("error: --threads-per-run must be >= 1")
    return args, passthrough


def list_presets() -> str:
    lines = []
    for name, p in presets().items():
        n = len(expand_grid(p.variants, p.envs, p.seeds))
        lines.append(f"{name}: {n} runs = {len(p.envs)} envs x {len(p.seeds)} seeds x {len(p.variants)} variants "
                     f"({', '.join(v.label for v in p.variants)})\n    {p.description}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.list_presets:
        print(list_presets())
        return 0
    runs, tracking, track = build_grid(args, passthrough)
    sweep_dir = Path(args.sweep_dir or Path("sweeps") / (args.preset or "adhoc")).resolve()
    launch = Launch(sweep_dir, Path(args.script_dir).resolve(), tuple(tracking), track,
                    args.wandb_group or sweep_dir.name)
    launch = replace(launch, resumable=check_runs(runs, launch))
    threads = args.threads_per_run or max(1, math.ceil(args.cpus_per_run))
    done0 = {r.run_id for r in runs if finished_final(sweep_dir, r) is not None}
    todo = [r for r in runs if r.run_id not in done0]
    n_resume = sum(launch.resume_from(r) is not None for r in todo)

    if args.dry_run:
        for r in runs:
            status = "done" if r.run_id in done0 else "resume" if launch.resume_from(r) is not None else "todo"
            print(f"{status:6s}  {r.run_id}  {shlex.join(launch.command(r))}")
        print(f"{len(runs)} runs: {len(done0)} done, {len(todo)} to run, {n_resume} of them from a checkpoint "
              f"(sweep dir {sweep_dir})")
        return 0

    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(sweep_dir)  # noqa: F841 - held until exit
    print(f"sweep {sweep_dir}: {len(runs)} runs, {len(done0)} already done, {len(todo)} to run, {n_resume} of them "
          "from a checkpoint", flush=True)

    status: dict[str, dict] = {r.run_id: {"status": "done" if r.run_id in done0 else "queued", "attempts": 0}
                               for r in runs}
    t_start = time.time()
    interrupted = False
    if todo:
        interrupted = _execute(runs, todo, status, args, launch, threads)
    wall = time.time() - t_start

    failed = [r for r in runs if status[r.run_id]["status"] == "failed"]
    ran_now = [r for r in todo if status[r.run_id]["status"] == "done"]
    link_finished_runs(runs, sweep_dir)
    _write_status(sweep_dir, runs, status, wall)

    print("\n" + summary_table(runs, sweep_dir))
    n_done = sum(s["status"] == "done" for s in status.values())
    rate = f", {len(ran_now) / wall * 3600:.1f} runs/hour" if ran_now and wall > 0 else ""
    print(f"\n{n_done}/{len(runs)} done ({len(done0)} skipped as already done, {len(ran_now)} ran now in "
          f"{fmt_duration(wall)}{rate}), {len(failed)} failed")
    for r in failed:
        s = status[r.run_id]
        log = run_dir(sweep_dir, r) / "log.txt"
        error = f"{s['error']}\n" if s.get("error") else ""
        print(f"\nFAILED {r.run_id} after {s['attempts']} attempt(s), last exit {s.get('rc')}; log {log}\n{error}"
              f"--- last {LOG_TAIL_LINES} lines ---\n{log_tail(log)}")
    if interrupted:
        print(f"\ninterrupted: rerun the same command to finish the {len(runs) - n_done} unfinished run(s); "
              "finished runs are kept", flush=True)
        return 130
    if failed:
        print(f"\nrerun the same command to retry the {len(failed)} failed run(s); finished runs are kept")
    if args.report:
        report = PROJECT_DIR / "report.py"
        if report.is_file():
            cmd = [sys.executable, str(report), "--runs-dir", str(sweep_dir / "runs"),
                   "--out-dir", str(sweep_dir / "report")]
            print(f"\n$ {shlex.join(cmd)}", flush=True)
            subprocess.run(cmd, check=False)
        else:
            print(f"\n--report: {report} does not exist; no report written")
    return 1 if failed else 0


def _execute(runs, todo, status, args, launch: Launch, threads) -> bool:
    """Run `todo` on Ray, updating `status` in place; returns True if interrupted (Ctrl-C or SIGTERM)."""
    sweep_dir = launch.sweep_dir
    ray, ray_started = connect_ray(args.address, args.num_cpus, args.num_gpus)
    if __name__ != "__main__":
        # Imported (not run as a script): ship the task's code with it, since remote workers may lack this module.
        try:
            import ray.cloudpickle

            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        except Exception:  # noqa: BLE001
            pass
    env_vars = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OPENBLAS_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    opts = dict(num_cpus=args.cpus_per_run, max_retries=0, retry_exceptions=False)
    if args.gpus_per_run > 0:
        opts["num_gpus"] = args.gpus_per_run  # Ray sets CUDA_VISIBLE_DEVICES of the task to its share
    else:
        # Ray >= 2.4x no longer hides GPUs from tasks that asked for none: hide them, or every run would pile
        # onto GPU 0 (the scripts use a GPU when they see one) without Ray accounting for it.
        env_vars["CUDA_VISIBLE_DEVICES"] = ""
    task = ray.remote(run_subprocess).options(**opts)
    queue = list(todo)
    in_flight: dict = {}
    bar = ProgressBar(len(runs))
    submitted: dict = {}  # ref -> submission time
    cap = 1

    def counts():
        done = sum(s["status"] == "done" for s in status.values())
        failed = sum(s["status"] == "failed" for s in status.values())
        now = time.time()
        return done, [now - submitted[ref] for ref in in_flight], failed, len(queue), cap

    stop_file = sweep_dir / f".stop-{os.getpid()}-{time.time_ns()}"
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        while queue or in_flight:
            cap = capacity(ray, args.cpus_per_run, args.gpus_per_run)
            while queue and len(in_flight) < cap:
                run = queue.pop(0)
                st = status[run.run_id]
                st["attempts"] += 1
                st["status"] = "running"
                rd = run_dir(sweep_dir, run)
                rd.mkdir(parents=True, exist_ok=True)
                cmd = launch.command(run)  # per attempt: a retry resumes from the checkpoint of the last one
                (rd / "run.json").write_text(json.dumps(
                    {"script": run.script, "recipe": run.recipe, "env_id": run.env_id, "seed": run.seed,
                     "flags": list(run.flags), "label": run.label, "command": shlex.join(cmd)}, indent=2))
                ref = task.remote(cmd, str(rd), str(rd / "log.txt"), env_vars, st["attempts"], args.run_timeout,
                                  str(stop_file))
                in_flight[ref] = run
                submitted[ref] = time.time()
            bar.update(*counts())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                run = in_flight.pop(ref)
                submitted.pop(ref)
                st = status[run.run_id]
                try:
                    result = ray.get(ref)
                    st.update(rc=result["rc"], node=result["node"], host=result["host"], wall_s=result["wall_s"])
                    st.setdefault("nodes", []).append(result["node"])
                except Exception as exc:  # noqa: BLE001 - worker or node died: a failed attempt like any other
                    st.update(rc=None, error=f"{type(exc).__name__}: {str(exc).strip()[-2000:]}")
                if finished_final(sweep_dir, run) is not None:
                    st["status"] = "done"
                    bar.durations.append(st.get("wall_s") or 0.0)
                elif st["attempts"] <= args.max_retries:
                    st["status"] = "queued"
                    queue.append(run)
                else:
                    st["status"] = "failed"
                bar.update(*counts(), force=True)
        bar.close()
        return False
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: stopping {len(in_flight)} running run(s); each writes its checkpoint first "
              f"(up to {TERM_GRACE_S} s; Ctrl-C again to stop them now, losing what they did since their last "
              "checkpoint)", file=sys.stderr, flush=True)
        stop_file.touch()
        try:
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=TERM_GRACE_S + 15)
        except (Exception, KeyboardInterrupt):  # noqa: BLE001 - shutting Ray down below ends the runs at once
            pass
        for run in in_flight.values():
            status[run.run_id]["status"] = "done" if finished_final(sweep_dir, run) is not None else "interrupted"
        for run in queue:
            status[run.run_id]["status"] = "queued"
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_file.unlink(missing_ok=True)
        if ray_started:
            ray.shutdown()


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def _lock(sweep_dir: Path):
    """One sweep.py per sweep folder: two would start the same runs twice."""
    f = open(sweep_dir / ".sweep.lock", "w")
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no lock
        pass
    except OSError:
        raise SystemExit(f"error: another sweep.py is running on {sweep_dir}") from None
    return f


def _write_status(sweep_dir: Path, runs: list[Run], status: dict, wall: float) -> None:
    out = {"written": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": wall,
           "runs": {r.run_id: {"script": r.script, "recipe": r.recipe, "env_id": r.env_id, "seed": r.seed,
                               "flags": list(r.flags), **status[r.run_id]} for r in runs}}
    tmp = sweep_dir / "sweep_status.json.tmp"
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, sweep_dir / "sweep_status.json")


if __name__ == "__main__":
    sys.exit(main())

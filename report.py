"""Turn runs into the answers of the reproduction: a self-contained Markdown report with PNG figures.

    python report.py --runs-dir runs --out-dir report
    python report.py --runs-dir results/evidence --out-dir results/evidence/report

Reads only `<runs-dir>/<run_name>/{args.json, metrics.jsonl, final.json}` (the output contract in CONTRIBUTING.md),
the published numbers shipped in this project's `reference/` folder and, if present, the output of
benchmark_runtime.py (`results/benchmark_<device>.json`, or its `.csv`). No network.

- Question 1, Atari 100k: our runs, labelled by recipe, next to the published per-game means and human-normalised
  scores (HNS); the reproduction report's Table 1 layout; median / mean / IQM HNS with 95% percentile
  stratified-bootstrap confidence intervals (the rliable method, written with numpy); the probability that DrQ
  improves on NDDQN; the games without runs.
- Question 1, DMC: evaluation return against environment steps, the mean over seeds with its 95% confidence
  interval, with the authors' DrQ learning curve and the published 100k / 500k numbers on the same axes.
- Question 2: critic invariance over training (`invariance/q_mse_two_shifts`, `invariance/q_mse_shift_vs_none`).
- Question 3: wall time per step of every run, and the update-cost table of the benchmark.

Runs are grouped by (algo or recipe, code_version, flags): runs that differ in any configuration flag are never
averaged together; a flag missing from an older run's args.json counts at the script's current default. A run
without final.json did not finish: it is drawn dashed up to the step it reached and is never counted as a result in
a table.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import shutil
from collections import defaultdict
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = PROJECT_DIR / "reference"
ATARI_ALGOS = ("nddqn_atari", "drq_dqn")
DMC_ALGOS = ("sac_state", "sac_pixels", "drq_sac", "sac_ae", "sac_ae_frozen")
SCRIPTS = (*ATARI_ALGOS, *DMC_ALGOS, "pretrain_autoencoder")  # args.json `algo` is the script's file name
# dm_control suite domains; the ones with underscores are why 'ball_in_cup_catch' cannot be split at any '_'.
DMC_DOMAINS = ("acrobot", "ball_in_cup", "cartpole", "cheetah", "dog", "finger", "fish", "hopper", "humanoid",
               "humanoid_CMU", "lqr", "manipulator", "pendulum", "point_mass", "quadruped", "reacher", "stacker",
               "swimmer", "walker")
FINAL_KEYS = ("env_id", "algo", "seed", "total_timesteps", "mean_return", "wall_time_s")
RUN_KEYS = ("env_id", "algo", "seed")  # what an unfinished run's args.json must name to be drawn
# Flags that name a run or its bookkeeping, not its configuration: they never split a group.
NON_CONFIG_FLAGS = {
    "seed", "env_id", "run_name", "runs_dir", "track", "wandb_project_name", "wandb_entity", "wandb_group",
    "wandb_mode", "capture_video", "save_model", "eval_checkpoint", "cuda", "torch_deterministic", "algo",
    "code_version", "resume",
}
# Published Atari columns shown next to ours (reference/atari_100k_scores.csv; spec §2.5, §2.6, reproduction report).
PUBLISHED_ATARI = (
    ("drq_reported_final", "DrQ reported"),
    ("drq_reported_arxiv", "DrQ reported (arXiv)"),
    ("drq_100runs", "DrQ, rliable 100 runs"),
    ("drq_eps_100runs", "DrQ(ε), rliable 100 runs"),
    ("der_reported", "DER reported"),
    ("nddqn_reproduction", "repro. report NDDQN"),
    ("drq_reproduction", "repro. report DrQ"),
)
# Which published DMC row (reference/dmc_scores.csv, spec §1.5) each of our algorithms is compared with.
PUBLISHED_DMC = {
    ("drq_sac", 2, 2): "DrQ K=2,M=2",
    ("drq_sac", 1, 1): "DrQ K=1,M=1",
    "sac_ae": "SAC-AE",  # sac_ae.py; sac_ae_frozen.py (the reproduction report's setup) has no published row
    "sac_state": "SAC State",
    "sac_pixels": "SAC (pixels)",
}
DMC_PUBLISHED_METHODS = ("DrQ K=2,M=2", "DrQ K=1,M=1", "SAC-AE", "SAC State", "SAC (pixels)")
DMC_CURVE_METHOD = "DrQ K=2,M=2 learning curve"
INVARIANCE_KEYS = ("invariance/q_mse_two_shifts", "invariance/q_mse_shift_vs_none")
# t_{0.975}(df) for df = 1..30 (scipy.stats.t.ppf(0.975, df)): the 95% interval of a mean over a few seeds must
# widen with the few degrees of freedom; past 30 the Cornish-Fisher expansion in t_quantile_975 is within 1e-4.
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
        2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
        2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
CI_NOTE = "95% CI of the mean over seeds: mean ± t(0.975, n-1) · s / √n"


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding one sub-folder per run (the training scripts' --runs-dir, or results/evidence)"""
    out_dir: str = "report"
    """folder the report is written to (report.md, figures/, summary.json); created or overwritten"""
    bootstrap_reps: int = 10000
    """stratified-bootstrap resamples for every confidence interval (rliable uses 50,000)"""
    seed: int = 0
    """seed of the bootstrap, so a report is reproducible"""
    benchmark: list[str] | None = None
    """benchmark_runtime.py outputs (.json or .csv) to include; default: results/benchmark_<device>.json (its .csv
    where there is no .json) next to this script, not --quick ones"""
    merge_code_versions: bool = False
    """average runs of one configuration trained at different commits (a runs folder filled over days of
    commits; a flag added since counts at its default); off: a different code version is a different group"""


def fail(message: str):
    raise SystemExit(f"error: {message}")


def command_line(args: Args) -> str:
    """The report's command: every flag that differs from its default (--runs-dir and --out-dir always), so the
    header says how to redraw it exactly."""
    default, words = Args(), ["python report.py"]
    for name, value in vars(args).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words += [] if value == getattr(default, name) else [flag if value else flag.replace("--", "--no-", 1)]
        elif name in ("runs_dir", "out_dir") or value != getattr(default, name):
            words.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(words)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------------------------------
# Statistics: human-normalised scores, aggregates and the stratified bootstrap (rliable, Agarwal et al. 2021).
# Scores are a list with one array per game, of shape (..., runs_in_that_game): games may have different numbers
# of runs. Every aggregate maps such a list to an array of shape (...), so the same code gives point estimates
# (a leading axis of 1) and bootstrap replicates (a leading axis of reps).
# ---------------------------------------------------------------------------------------------------------------


def human_normalized(score, random_score: float, human_score: float):
    """HNS = (score - random) / (human - random), spec §3."""
    return (np.asarray(score, dtype=float) - random_score) / (human_score - random_score)


def trimmed_mean(x: np.ndarray, proportion: float = 0.25) -> np.ndarray:
    """Mean of the last axis after cutting int(proportion * n) values from each end (scipy.stats.trim_mean)."""
    n = x.shape[-1]
    cut = int(proportion * n)
    return np.sort(x, axis=-1)[..., cut:n - cut].mean(-1)


def aggregate_median(scores: list[np.ndarray]) -> np.ndarray:
    """Median over games of the per-game mean over runs (the papers' headline metric)."""
    return np.median(np.stack([s.mean(-1) for s in scores], -1), -1)


def aggregate_mean(scores: list[np.ndarray]) -> np.ndarray:
    """Mean over games of the per-game mean over runs."""
    return np.stack([s.mean(-1) for s in scores], -1).mean(-1)


def aggregate_iqm(scores: list[np.ndarray]) -> np.ndarray:
    """Interquartile mean: 25%-trimmed mean of all (run, game) scores pooled (rliable)."""
    return trimmed_mean(np.concatenate(scores, -1), 0.25)


def aggregate_optimality_gap(scores: list[np.ndarray], gamma: float = 1.0) -> np.ndarray:
    """How far the pooled scores fall short of gamma (human level): gamma - mean(min(score, gamma)) (rliable)."""
    return gamma - np.minimum(np.concatenate(scores, -1), gamma).mean(-1)


AGGREGATES = {"median": aggregate_median, "mean": aggregate_mean, "iqm": aggregate_iqm,
              "optimality_gap": aggregate_optimality_gap}


def point_estimate(statistic, *groups: list[np.ndarray]) -> float:
    return float(statistic(*[[np.asarray(s, dtype=float)[None] for s in g] for g in groups])[0])


def stratified_bootstrap(statistic, *groups: list[np.ndarray], reps: int = 10000, seed: int = 0,
                         chunk: int = 1000) -> np.ndarray:
    """Bootstrap replicates of `statistic`: each replicate redraws, independently within every game (stratum) of
    every group, as many runs as that game has, with replacement. Returns an array of shape (reps,)."""
    rng = np.random.default_rng(seed)
    groups = [[np.asarray(s, dtype=float) for s in g] for g in groups]
    out = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        resampled = [[s[rng.integers(0, len(s), size=(n, len(s)))] for s in g] for g in groups]
        out.append(statistic(*resampled))
    return np.concatenate(out)


def interval_estimate(statistic, *groups: list[np.ndarray], reps: int = 10000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(point estimate, lower, upper) with the percentile stratified-bootstrap CI at `level`."""
    boot = stratified_bootstrap(statistic, *groups, reps=reps, seed=seed)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return point_estimate(statistic, *groups), float(lo), float(hi)


def probability_of_improvement_per_game(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for one game: the Mann-Whitney U statistic over all run pairs, ties counted 1/2 (rliable)."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean((-2, -1))


def probability_of_improvement(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    """P(X > Y) averaged over games (rliable's probability of improvement); xs[i] and ys[i] are one game."""
    return np.stack([probability_of_improvement_per_game(x, y) for x, y in zip(xs, ys)], -1).mean(-1)


def t_quantile_975(df: int) -> float:
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci95(values) -> tuple[float, float, float]:
    """(mean, lower, upper): the t-interval of the mean; NaN bounds for a single value, which has no spread."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = t_quantile_975(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


# ---------------------------------------------------------------------------------------------------------------
# Reading runs and reference data
# ---------------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); delete or fix that run")
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if not isinstance(data, dict):
        fail(f"{path} holds a {type(data).__name__}, expected a JSON object")
    return data


def atari_game(env_id: str) -> str:
    """'BreakoutNoFrameskip-v4' or 'ALE/Breakout-v5' -> 'Breakout'."""
    name = env_id.split("/")[-1]
    for suffix in ("NoFrameskip-v4", "NoFrameskip-v0", "Deterministic-v4", "-v4", "-v5", "-v0"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dmc_task(env_id: str) -> str:
    """The one spelling of a task everywhere in the report, the training scripts' `domain-task`: 'cartpole-swingup'
    from 'cartpole-swingup', 'cartpole_swingup' (reference/dmc_scores.csv) or 'dmc/cartpole-swingup-v0';
    'ball_in_cup-catch' from 'ball_in_cup_catch'."""
    name = env_id.split("/")[-1]
    if name.endswith("-v0") or name.endswith("-v1"):
        name = name[:-3]
    if "-" in name:
        return name
    for domain in sorted(DMC_DOMAINS, key=len, reverse=True):  # humanoid_CMU before humanoid
        if name.startswith(domain + "_"):
            return f"{domain}-{name[len(domain) + 1:]}"
    return name.replace("_", "-", 1)


@dataclass
class Run:
    path: Path
    final: dict | None
    """None: the run did not finish (no final.json); it is drawn up to the step it reached, never counted"""
    args: dict

    def info(self, key: str, default=None):
        if self.final is not None and key in self.final:
            return self.final[key]
        return self.args.get(key, default)

    @property
    def finished(self) -> bool:
        return self.final is not None

    @property
    def algo(self) -> str:
        return str(self.info("algo"))

    @property
    def env_id(self) -> str:
        return str(self.info("env_id"))

    @property
    def seed(self):
        return self.info("seed")

    @property
    def total_timesteps(self) -> int:
        """Steps trained (final.json) or, for an unfinished run, the steps it was asked for (args.json)."""
        return int(self.info("total_timesteps", 0) or 0)

    @property
    def code_version(self) -> str:
        return str(self.info("code_version", "unknown"))

    @property
    def domain(self) -> str:
        if (self.algo in ATARI_ALGOS or "NoFrameskip" in self.env_id or self.env_id.startswith("ALE/")
                or "eval_epsilon" in self.args):
            return "atari"
        if self.algo in DMC_ALGOS or "action_repeat" in self.args or "action_repeat" in (self.final or {}):
            return "dmc"
        return "other"

    @property
    def env(self) -> str:
        """The game (Atari) or task (DMC) name used in tables and figures."""
        return atari_game(self.env_id) if self.domain == "atari" else dmc_task(self.env_id)

    def metrics(self) -> list[dict]:
        if not hasattr(self, "_metrics"):
            path = self.path / "metrics.jsonl"
            if not path.exists():
                fail(f"{path} is missing (every run writes metrics.jsonl); delete or fix that run")
            lines = path.read_text().split("\n")
            rows = []
            for i, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if not self.finished and i == len(lines):
                        break  # a running (or killed) run's last line may be half written
                    fail(f"{path} line {i} is not valid JSON ({e.msg}); delete or fix that run")
                if not isinstance(row, dict) or "global_step" not in row:
                    fail(f"{path} line {i} has no global_step; delete or fix that run")
                rows.append(row)
            self._metrics = rows
        return self._metrics

    @property
    def last_step(self) -> int:
        return int(max((float(r["global_step"]) for r in self.metrics()), default=0))

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(global_step, value) of one metric key, sorted by step; a step logged twice (a resumed run repeats the
        steps after its checkpoint) keeps its last value."""
        pts = {float(r["global_step"]): float(r[key]) for r in self.metrics()
               if key in r and r[key] is not None and np.isfinite(float(r[key]))}
        steps = np.array(sorted(pts))
        return steps, np.array([pts[s] for s in steps])


def load_runs(runs_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every run, finished (final.json) or not (args.json only), and the folders that are no run with the reason.
    Malformed files are one-line errors."""
    if not runs_dir.exists():
        fail(f"runs folder '{runs_dir}' does not exist (pass --runs-dir)")
    if not runs_dir.is_dir():
        fail(f"'{runs_dir}' is not a folder (pass the training scripts' --runs-dir)")
    runs, unusable = [], []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if not (d / "final.json").exists():
            if not (d / "args.json").exists():
                unusable.append((d, "no final.json and no args.json"))
                continue
            args = read_json(d / "args.json")
            missing = [k for k in RUN_KEYS if k not in args]
            if missing:
                unusable.append((d, f"unfinished, and args.json lacks {', '.join(missing)}"))
                continue
            runs.append(Run(d, None, args))
            continue
        final = read_json(d / "final.json")
        missing = [k for k in FINAL_KEYS if k not in final]
        if missing:
            fail(f"{d / 'final.json'} lacks {', '.join(missing)}; it was not written by a training script")
        if not isinstance(final["mean_return"], (int, float)) or not isinstance(final["wall_time_s"], (int, float)):
            fail(f"{d / 'final.json'}: mean_return and wall_time_s must be numbers")
        if not (d / "args.json").exists():
            fail(f"{d} has final.json but no args.json; delete or fix that run")
        runs.append(Run(d, final, read_json(d / "args.json")))
    if not runs:
        detail = f"; {plural(len(unusable), 'folder')} without either" if unusable else ""
        fail(f"no runs in '{runs_dir}' (no */final.json or */args.json){detail}")
    return runs, unusable


def read_atari_reference() -> list[dict]:
    with open(REFERENCE_DIR / "atari_100k_scores.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "game":
                r[k] = float(v)
    return rows


def read_dmc_reference() -> list[dict]:
    with open(REFERENCE_DIR / "dmc_scores.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["task"] = dmc_task(r["task"])
        r["env_steps"], r["mean"], r["std"] = int(r["env_steps"]), float(r["mean"]), float(r["std"])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Grouping: one group per (algo, code_version, configuration flags); `recipe` in args.json names a group
# ---------------------------------------------------------------------------------------------------------------


def _freeze(v):
    return json.dumps(v, sort_keys=True, default=str)


@dataclass
class Group:
    algo: str
    code_version: str
    flags: dict
    members: list[Run] = field(default_factory=list)
    label: str = ""
    per_env_flags: dict = field(default_factory=dict)

    @property
    def runs(self) -> list[Run]:
        """The finished runs: the only ones counted in tables and averaged in curves."""
        return [r for r in self.members if r.finished]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.members if not r.finished]

    def by_env(self, finished: bool = True) -> dict[str, list[Run]]:
        out = defaultdict(list)
        for r in self.members:
            if r.finished == finished:
                out[r.env].append(r)
        return dict(out)

    def envs(self) -> set[str]:
        return {r.env for r in self.members}

    @property
    def recipe(self) -> str | None:
        return self.flags.get("recipe")

    @property
    def domain(self) -> str:
        return self.members[0].domain


def script_defaults(algo: str) -> dict:
    """The default of every flag in the current `Args` of the script `algo`.py; {} where there is no such script."""
    if algo not in SCRIPTS:
        return {}
    try:
        args_class = importlib.import_module(algo).Args
    except ImportError:
        return {}
    return {f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(args_class) if f.default is not MISSING or f.default_factory is not MISSING}


def configurations(runs: list[Run]) -> dict[Path, dict]:
    """Each run's args.json (by run folder), plus the flags that other runs of its algo have and it lacks, at the
    script's current default. An older code version did not write the flags added since; without this, one
    configuration trained before and after a flag came would split in two. It assumes a new flag's default keeps
    the old results (channels_last, on by default, only reorders the convolutions' sums)."""
    flag_names = defaultdict(set)
    for r in runs:
        flag_names[r.algo] |= r.args.keys()
    defaults, out = {}, {}
    for r in runs:
        missing = flag_names[r.algo] - r.args.keys()
        if missing and r.algo not in defaults:
            defaults[r.algo] = script_defaults(r.algo)
        # A flag the current script no longer has stays missing, so its runs stay apart.
        out[r.path] = {**{k: defaults[r.algo][k] for k in missing if k in defaults[r.algo]}, **r.args}
    return out


def per_env_flag_names(runs: list[Run], config: dict[Path, dict]) -> set[str]:
    """Flags of DMC runs of one algo that are constant within every task but differ across tasks (for example the
    per-task action repeat, spec §1.4). They do not split groups: figures are per task, so no two runs with a
    different value are ever averaged. Atari groups are aggregated across games, so there every flag counts.
    `config`: each run's flags (configurations)."""
    by_flag_env = defaultdict(lambda: defaultdict(set))
    for r in runs:
        for k, v in config[r.path].items():
            if k not in NON_CONFIG_FLAGS:
                by_flag_env[k][r.env].add(_freeze(v))
    names = set()
    for k, envs in by_flag_env.items():
        if all(len(vals) == 1 for vals in envs.values()) and len(set().union(*envs.values())) > 1:
            names.add(k)
    return names


def group_runs(runs: list[Run], merge_code_versions: bool = False) -> list[Group]:
    config = configurations(runs)
    per_env = {}
    for algo in {r.algo for r in runs}:
        algo_runs = [r for r in runs if r.algo == algo]
        per_env[algo] = per_env_flag_names(algo_runs, config) if algo_runs[0].domain == "dmc" else set()
    groups: dict[tuple, Group] = {}
    for r in runs:
        flags = {k: v for k, v in config[r.path].items() if k not in NON_CONFIG_FLAGS and k not in per_env[r.algo]}
        key = (r.algo, None if merge_code_versions else r.code_version, _freeze(flags))
        if key not in groups:
            groups[key] = Group(r.algo, r.code_version, flags)
        groups[key].members.append(r)
    out = sorted(groups.values(), key=lambda g: (g.algo, g.code_version, _freeze(g.flags)))
    for g in out:
        g.code_version = ",".join(sorted({r.code_version for r in g.members}))
        for k in per_env[g.algo]:
            g.per_env_flags[k] = {env: next(config[r.path].get(k) for r in g.members if r.env == env)
                                  for env in sorted(g.envs())}
    _label_groups(out)
    return out


def is_drq_sac(g: Group) -> bool:
    """drq_sac.py runs (also under another --exp-name, which becomes `algo`): DMC runs with DrQ's K and M flags."""
    return g.domain == "dmc" and "k" in g.flags and "m" in g.flags


def _label_groups(groups: list[Group]) -> None:
    """The recipe (args.json `recipe`) or else the algo (plus K, M for drq_sac), then whatever distinguishes groups
    of the same name: the code version and the flags whose values differ between them."""
    by_base = defaultdict(list)
    for g in groups:
        base = g.recipe or g.algo
        if is_drq_sac(g) and not g.recipe:
            base += f" K={g.flags['k']},M={g.flags['m']}"
        by_base[base].append(g)
    for base, gs in by_base.items():
        for g in gs:
            extra = []
            if len({x.code_version for x in gs}) > 1:
                extra.append(f"@{g.code_version}")
            keys = sorted(set().union(*[x.flags.keys() for x in gs]) - {"recipe"})
            diff = [k for k in keys if len({_freeze(x.flags.get(k)) for x in gs}) > 1]
            extra += [f"{k}={g.flags.get(k)}" for k in diff[:4]]
            g.label = base + (f" [{', '.join(extra)}]" if extra else "")
    seen = defaultdict(int)
    for g in groups:
        seen[g.label] += 1
        if seen[g.label] > 1:
            g.label += f" #{seen[g.label]}"


# ---------------------------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------------------------


def fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save(fig, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / "figures" / name, dpi=110)
    plt.close(fig)
    return f"figures/{name}"


def figure_legend(fig, axes, **kw) -> None:
    """One legend for all panels, outside them (constrained layout makes room), so it never covers data; a label
    drawn in several panels appears once."""
    entries = {}
    for ax in np.atleast_1d(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(lab, h)
    if entries:
        fig.legend(list(entries.values()), list(entries), fontsize=8, **{"loc": "outside right upper", **kw})


class Report:
    def __init__(self, args: Args, out_dir: Path):
        self.args, self.out_dir = args, out_dir
        self.md: list[str] = []
        self.summary: dict = {}
        self.figures: list[str] = []

    def add(self, *text: str) -> None:
        self.md.extend(text)

    def figure(self, fig, name: str, caption: str) -> None:
        rel = save(fig, self.out_dir, name)
        self.figures.append(rel)
        self.add(f"![{caption}]({rel})", "", f"*{caption}*", "")


def incomplete_note(r: Run) -> str:
    return f"incomplete, up to step {r.last_step:,}"


def section_runs(rep: Report, runs: list[Run], unusable: list[tuple[Path, str]], groups: list[Group]) -> None:
    finished = [r for r in runs if r.finished]
    rep.add("## Runs", "",
            f"{plural(len(finished), 'finished run')} and {plural(len(runs) - len(finished), 'incomplete run')} in "
            f"{plural(len(groups), 'group')}. A group is one (algo or recipe, code version, flags) configuration; "
            "runs from different groups are never averaged together. An incomplete run (no final.json) is drawn "
            "up to the step it reached and never counted in a table.", "")
    rows = []
    for g in groups:
        envs = g.by_env()
        seeds = sorted({len(v) for v in envs.values()})
        rows.append([g.label, g.algo, g.code_version, len(g.runs), len(g.incomplete), len(g.envs()),
                     "—" if not seeds else f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else seeds[0]])
    rep.add(md_table(["group", "algo", "code version", "finished runs", "incomplete runs", "games/tasks",
                      "finished seeds per game/task"], rows), "")
    for g in groups:
        shown = {k: v for k, v in g.flags.items() if k not in ("exp_name",)}
        text = ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items()))
        rep.add(f"- **{g.label}** flags: {text or '(none recorded)'}")
        for k, per_env in g.per_env_flags.items():
            rep.add(f"  - per task `{k}`: " + ", ".join(f"{e}={v}" for e, v in per_env.items()))
    rep.add("")
    incomplete = [(g, r) for g in groups for r in g.incomplete]
    if incomplete:
        rep.add(f"**Incomplete runs (no final.json), drawn but not counted ({len(incomplete)}):**", "",
                md_table(["run", "group", "game/task", "seed", "reached"],
                         [[f"`{r.path.name}`", g.label, r.env, r.seed,
                           f"{incomplete_note(r)} of {r.total_timesteps:,}"] for g, r in incomplete]), "")
    if unusable:
        rep.add(f"**Folders that hold no run ({len(unusable)}):** "
                + ", ".join(f"`{p.name}` ({why})" for p, why in unusable), "")
    rep.summary["groups"] = [{"label": g.label, "algo": g.algo, "recipe": g.recipe, "code_version": g.code_version,
                              "flags": g.flags, "runs": [r.path.name for r in g.runs],
                              "incomplete_runs": [r.path.name for r in g.incomplete]} for g in groups]
    rep.summary["incomplete_runs"] = {r.path.name: {"group": g.label, "last_step": r.last_step}
                                      for g, r in incomplete}
    rep.summary["unusable_folders"] = [p.name for p, _ in unusable]


def hns_cell(score: float, ref_row: dict) -> str:
    return f"{score:.1f} (HNS {human_normalized(score, ref_row['random'], ref_row['human']):.3f})"


def section_atari(rep: Report, groups: list[Group]) -> None:
    ref = read_atari_reference()
    ref_by_game = {r["game"]: r for r in ref}
    games = [r["game"] for r in ref]
    groups = [g for g in groups if g.domain == "atari"]
    rep.add("## Question 1: Atari 100k", "")
    if not groups:
        rep.add("No Atari runs found (algos `nddqn_atari`, `drq_dqn`); the published columns are shown alone.", "")

    # Per group and game: finished runs' scores (mean_return of final.json) and their HNS.
    scores = {g.label: {game: np.array([r.final["mean_return"] for r in rs], dtype=float)
                        for game, rs in g.by_env().items()} for g in groups}
    hns = {label: {game: human_normalized(s, ref_by_game[game]["random"], ref_by_game[game]["human"])
                   for game, s in per_game.items() if game in ref_by_game}
           for label, per_game in scores.items()}

    def incomplete_cell(g: Group, game: str) -> str:
        return ", ".join(f"seed {r.seed} {incomplete_note(r)}" for r in g.by_env(finished=False).get(game, []))

    # Our games: every game with a run, our score next to the published per-game means, all with their HNS.
    played = [x for x in games if any(x in g.envs() for g in groups)]
    rows = []
    for game in played:
        r = ref_by_game[game]
        for g in groups:
            if game not in g.envs():
                continue
            s = scores[g.label].get(game)
            if s is None:
                ours = ["0", "—", "—"]
            else:
                m, lo, hi = mean_ci95(s)
                ci = f" [{lo:.1f}, {hi:.1f}]" if len(s) > 1 else ""
                ours = [plural(len(s), "seed"), f"{m:.1f}{ci}", f"{np.mean(hns[g.label][game]):.3f}"]
            rows.append([game, g.label, *ours, incomplete_cell(g, game) or "—"]
                        + [hns_cell(r[col], r) for col, _ in PUBLISHED_ATARI])
    if rows:
        rep.add("### Our games: our scores next to the published per-game means", "",
                "Ours: each finished run's final evaluation (`mean_return` in final.json: the mean game score of "
                f"the final policy), mean over seeds with the {CI_NOTE} where there are several, and the HNS of "
                "that mean, (score - random) / (human - random) (spec §3). Incomplete runs are listed, never "
                "scored. Published: per-game means of reference/atari_100k_scores.csv with their HNS.", "",
                md_table(["Game", "run", "finished seeds", "score (mean [95% CI])", "HNS", "incomplete runs"]
                         + [n for _, n in PUBLISHED_ATARI], rows), "")

    # Table 1 layout: per game, our means over seeds, then the published columns.
    header = ["Game", "Random", "Human"] + [f"{g.label} (ours)" for g in groups] + [n for _, n in PUBLISHED_ATARI]
    rows = []
    for game in games:
        r = ref_by_game[game]
        row = [game, fmt(r["random"]), fmt(r["human"])]
        for g in groups:
            s = scores[g.label].get(game)
            row.append(f"{s.mean():.1f} ({plural(len(s), 'seed')})" if s is not None
                       else incomplete_cell(g, game) or "missing")
        row += [fmt(r[col]) for col, _ in PUBLISHED_ATARI]
        rows.append(row)
    summary = {"groups": {}, "published": {}}
    # the published aggregates over the games our finished runs cover (all 26 without any), so that a figure never
    # sets a few games of ours beside 26 of theirs
    ours = {game for g in groups for game in hns[g.label]}
    ref_ours = [r for r in ref if r["game"] in ours] or ref
    summary["published_games"] = len(ref_ours)
    for name, agg in (("Median HNS", aggregate_median), ("Mean HNS", aggregate_mean)):
        row = [f"**{name}**", "", ""]
        for g in groups:
            per_game = list(hns[g.label].values())
            row.append(fmt(point_estimate(agg, per_game), 3) if per_game else "—")
        for col, _ in PUBLISHED_ATARI:
            v = point_estimate(agg, [[human_normalized(r[col], r["random"], r["human"])] for r in ref_ours])
            summary["published"].setdefault(col, {})[name.split()[0].lower()] = v
            row.append(fmt(v, 3))
        rows.append(row)
    rep.add("### Table 1 layout: mean final score over seeds", "",
            "Our columns: mean over finished seeds of each run's final evaluation return, with the number of seeds "
            "(incomplete runs are named, not scored). Aggregates over the games with finished runs; the published "
            f"columns' over the same {summary['published_games']} games (all 26 when no run has finished). Published columns: reference/atari_100k_scores.csv (spec §2.5, §2.6; the "
            "reproduction report's Table 1). HNS here is recomputed with the standard human/random table (spec "
            "§3) for every column.", "",
            md_table(header, rows), "")

    # Missing and unknown games, and runs off the benchmark's protocol.
    for g in groups:
        if not g.runs:
            rep.add(f"- **{g.label}: no finished run yet**: not in any aggregate.")
            continue
        steps = sorted({r.final["total_timesteps"] for r in g.runs})
        if steps != [100_000]:
            rep.add(f"- **{g.label}: trained for {', '.join(map(str, steps))} agent steps, not the 100k of the "
                    "benchmark**: not comparable with the published columns.")
        present = set(scores[g.label])
        missing = [x for x in games if x not in present]
        unknown = sorted(present - set(games))
        summary["groups"][g.label] = {"recipe": g.recipe, "missing_games": missing, "unknown_games": unknown,
                                      "seeds_per_game": {x: int(len(v)) for x, v in scores[g.label].items()},
                                      "scores": {x: v.tolist() for x, v in scores[g.label].items()}}
        if missing:
            rep.add(f"- **{g.label}: missing games ({len(missing)}/26), aggregates use the other "
                    f"{26 - len(missing)}:** {', '.join(missing)}")
        else:
            rep.add(f"- **{g.label}:** all 26 games present.")
        if unknown:
            rep.add(f"  - not among the 26 Atari-100k games, left out of HNS: {', '.join(unknown)}")
    rep.add("")

    scored = [g for g in groups if hns[g.label]]
    if scored:
        section_atari_aggregates(rep, scored, hns, summary)
        section_probability_of_improvement(rep, scored, hns, summary)
    rep.summary["atari"] = summary


def section_atari_aggregates(rep: Report, groups: list[Group], hns: dict, summary: dict) -> None:
    reps, seed = rep.args.bootstrap_reps, rep.args.seed
    rows, names = [], []
    for g in groups:
        per_game = list(hns[g.label].values())
        res = {name: interval_estimate(fn, per_game, reps=reps, seed=seed) for name, fn in AGGREGATES.items()}
        summary["groups"][g.label].update({k: {"point": v[0], "ci95": [v[1], v[2]]} for k, v in res.items()})
        n = sorted({len(x) for x in per_game})
        seeds = plural(n[0], "seed") if len(n) == 1 else f"{n[0]}-{n[-1]} seeds"
        names.append(f"{g.label} ({plural(len(per_game), 'game')}, {seeds} per game)")
        rows.append([g.label, len(per_game), seeds] + [f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for v in res.values()])
    rep.add("### Aggregate human-normalised scores, 95% stratified-bootstrap CIs", "",
            f"Percentile stratified bootstrap (rliable): {reps} resamples, runs redrawn with replacement within "
            f"each game, seed {seed}. Median and mean are over the per-game means; IQM is the 25%-trimmed mean "
            "of all (run, game) scores; the optimality gap is 1 - mean(min(HNS, 1)). With a few seeds per game "
            "the CIs only reflect seed-to-seed variation of the runs we have; with one seed per game they have "
            "no width.", "",
            md_table(["group", "games", "seeds per game", "median", "mean", "IQM", "optimality gap"], rows), "")

    n_pub = summary["published_games"]
    pub = [(col, f"published: {name} ({plural(n_pub, 'game')})") for col, name in PUBLISHED_ATARI]
    # One fixed x range for all panels, from 0 (or below, if a CI is) to human level 1 (or above): a narrow
    # autozoomed axis would make small differences between groups look large.
    ends = [b for g in groups for k in ("median", "mean", "iqm") for b in summary["groups"][g.label][k]["ci95"]]
    ends += [summary["published"][col][k] for col, _ in pub for k in ("median", "mean")]
    lo, hi = min(0.0, *ends), max(1.0, *ends)
    pad = 0.04 * (hi - lo)
    fig, axes = plt.subplots(1, 3, figsize=(15, 1.8 + 0.42 * (len(groups) + len(pub))), sharey=True,
                             layout="constrained")
    for ax, key, title in zip(axes, ("median", "mean", "iqm"), ("median", "mean", "IQM (interquartile mean)")):
        for i, g in enumerate(groups):
            v = summary["groups"][g.label][key]
            ax.hlines(i, *v["ci95"], color="C0", lw=3, alpha=0.5, label="ours: 95% stratified-bootstrap CI")
            ax.plot(v["point"], i, "o", color="C0", label="ours: point estimate")
        for j, (col, _) in enumerate(pub):
            y = len(groups) + j
            if key == "iqm":  # the published columns are per-game means: without per-run scores there is no IQM
                ax.text(lo + 0.5 * (hi - lo), y, "not published", ha="center", va="center", fontsize=7, color="gray")
            else:
                ax.plot(summary["published"][col][key], y, "s", color="gray",
                        label="published per-game means (no CI)")
        ax.axvline(0, color="k", lw=0.8, label="random play (HNS 0)")
        ax.axvline(1, color="k", lw=0.8, ls=":", label="human (HNS 1)")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title(title)
        ax.set_xlabel("human-normalised score")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(groups) + len(pub)), names + [n for _, n in pub], fontsize=8)
    axes[0].set_ylabel("runs (ours) and published columns")
    axes[0].invert_yaxis()
    figure_legend(fig, axes, loc="outside lower center", ncols=3)
    fig.suptitle("Atari 100k: aggregate human-normalised score over games")
    rep.figure(fig, "atari_aggregates.png",
               "Atari 100k aggregate HNS: ours with 95% stratified-bootstrap CIs, the published per-game means "
               "(squares; IQM needs per-run scores, which the published tables lack); fixed axis from 0 to 1 "
               "(human) or the widest interval")


def section_probability_of_improvement(rep: Report, groups: list[Group], hns: dict, summary: dict) -> None:
    rep.add("### Probability of improvement, DrQ over NDDQN", "")
    # drq_dqn runs carry DrQ's augmentation flags, also under another --exp-name (which becomes `algo`)
    drq = [g for g in groups if g.algo == "drq_dqn" or "image_pad" in g.flags]
    base = [g for g in groups if g not in drq]
    pairs = [(x, y) for x in drq for y in base if set(hns[x.label]) & set(hns[y.label])]
    if not pairs:
        rep.add("Not available: it needs finished runs of both `drq_dqn` and `nddqn_atari` on at least one common "
                "game.", "")
        return
    rep.add("P(X > Y) as in rliable: for each game, the probability that a random run of X scores higher than a "
            "random run of Y (ties count 1/2), averaged over the games both have; 95% CI by a stratified "
            "bootstrap of both. 0.5 means no difference; a CI that excludes 0.5 is a significant one.", "")
    rows, single, summary["probability_of_improvement"] = [], [], {}
    fig, axes = plt.subplots(1, 2, figsize=(14, 2.5 + 0.5 * max(len(pairs), 5)), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 2]})
    # every pair's bars at the position of their game among all the pairs' games, under one set of tick labels
    all_games = sorted({g for x, y in pairs for g in hns[x.label] if g in hns[y.label]})
    for i, (x, y) in enumerate(pairs):
        common = [game for game in hns[x.label] if game in hns[y.label]]
        xs, ys = [hns[x.label][g] for g in common], [hns[y.label][g] for g in common]
        p, lo, hi = interval_estimate(probability_of_improvement, xs, ys, reps=rep.args.bootstrap_reps,
                                      seed=rep.args.seed)
        per_game = {g: float(probability_of_improvement_per_game(a, b)) for g, a, b in zip(common, xs, ys)}
        summary["probability_of_improvement"][f"{x.label} > {y.label}"] = {
            "point": p, "ci95": [lo, hi], "games": len(common), "per_game": per_game}
        counts = [len(np.atleast_1d(a)) for a in xs + ys]  # runs of either in each common game
        seeds = ("" if min(counts) == max(counts) else "at least ") + plural(min(counts), "seed") + " each"
        single.append(min(counts) == 1)
        rows.append([x.label, y.label, len(common), seeds, f"{p:.3f} [{lo:.3f}, {hi:.3f}]"])
        label = f"P({x.label} > {y.label}), {plural(len(common), 'game')}, {seeds}"
        axes[0].hlines(i, lo, hi, color=f"C{i}", lw=3, alpha=0.5)
        axes[0].plot(p, i, "o", color=f"C{i}", label=label)
        axes[1].bar(np.array([all_games.index(g) for g in per_game]) + 0.8 * (i + 0.5) / len(pairs) - 0.4,
                    list(per_game.values()), width=0.8 / len(pairs), color=f"C{i}", label=label)
    axes[1].set_xticks(np.arange(len(all_games)), all_games, rotation=90)
    axes[0].axvline(0.5, color="k", ls="--", lw=1, label="no difference (0.5)")
    axes[0].set_yticks(range(len(pairs)), [f"{x.label} > {y.label}" for x, y in pairs], fontsize=8)
    axes[0].set_xlim(-0.02, 1.02)
    axes[0].set_ylim(len(pairs) - 0.5, -0.5)
    axes[0].set_xlabel("probability of improvement (95% CI)")
    axes[0].set_ylabel("comparison X > Y")
    axes[0].set_title("over games")
    axes[1].axhline(0.5, color="k", ls="--", lw=1, label="no difference (0.5)")
    axes[1].set_ylabel("P(X > Y) in that game")
    axes[1].set_xlabel("game")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlim(-0.5, max(len(all_games), 5) - 0.5)  # a single game must not become one wall-wide bar
    axes[1].set_title("per game")
    figure_legend(fig, axes, loc="outside lower center", ncols=2)
    fig.suptitle("Atari 100k: probability that a DrQ run scores higher than an NDDQN run")
    rep.add(md_table(["X", "Y", "common games", "seeds per game", "P(X > Y) [95% CI]"], rows), "")
    if any(single):
        rep.add("With one run of each in a game, that game's P(X > Y) is 0, 1/2 or 1: which run scored higher, not "
                "an estimate of how often X beats Y; the bootstrap cannot widen it, so its CI says nothing about "
                "seeds.", "")
    rep.figure(fig, "atari_probability_of_improvement.png",
               "Probability that DrQ improves on NDDQN: over games with a 95% CI (left), per game (right)")


def relative_invariance(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """An invariance MSE divided by the square of the critic's mean Q (`losses/q`, last value logged at or before
    that step), so that runs whose Q values grow to different scales can be compared."""
    steps, values = run.series(key)
    q_steps, q = run.series("losses/q")
    if not len(q_steps):
        return np.zeros(0), np.zeros(0)
    at = np.searchsorted(q_steps, steps, side="right") - 1
    ok = (at >= 0) & (np.abs(q[np.maximum(at, 0)]) > 1e-6)
    return steps[ok], values[ok] / q[at[ok]] ** 2


def eval_curve(runs: list[Run], key: str, series=None) -> tuple[np.ndarray, ...]:
    """steps, mean over seeds, lower and upper end of its 95% CI (NaN where one seed logged that step) and the
    number of seeds, at every step logged by at least one seed; `series(run, key)` overrides where the values come
    from (default: the metric itself)."""
    per_step = defaultdict(list)
    for r in runs:
        for s, v in zip(*(series(r, key) if series else r.series(key))):
            per_step[s].append(v)
    steps = np.array(sorted(per_step))
    stats = np.array([mean_ci95(per_step[s]) for s in steps]).reshape(-1, 3)
    return steps, stats[:, 0], stats[:, 1], stats[:, 2], np.array([len(per_step[s]) for s in steps])


def plot_group(ax, g: Group, env: str, key: str, color: str, series=None) -> None:
    """A group's finished seeds as their mean, with the shaded 95% CI where several seeds logged a step (markers,
    so that a single evaluation shows), and every incomplete run of it dashed up to the step it reached."""
    runs = g.by_env().get(env, [])
    steps, mean, lo, hi, n = eval_curve(runs, key, series)
    if len(steps):
        several = n >= 2
        label = f"{g.label}: {plural(len(runs), 'seed')}" + (", mean and 95% CI" if several.any() else "")
        ax.plot(steps, mean, color=color, marker="o", ms=4, label=label)
        if several.sum() >= 2:
            ax.fill_between(steps, np.where(several, lo, mean), np.where(several, hi, mean), where=several,
                            color=color, alpha=0.2, lw=0)
        elif several.any():  # one step with a spread cannot be a band: draw its interval as an error bar
            ax.errorbar(steps[several], mean[several], yerr=[mean[several] - lo[several], hi[several] - mean[several]],
                        fmt="none", ecolor=color, capsize=4, alpha=0.6)
    for r in g.by_env(finished=False).get(env, []):
        s, v = series(r, key) if series else r.series(key)
        if len(s):
            ax.plot(s, v, color=color, ls="--", marker="x", ms=5, lw=1.2,
                    label=f"{g.label}, seed {r.seed}: {incomplete_note(r)}")


def value_at(run: Run, key: str, target: int) -> float | None:
    """The last logged value at or before `target` env steps (spec §1.5 'nearest eval <= target'), if the run's
    evaluations got within 10% of the target."""
    steps, values = run.series(key)
    ok = (steps <= target) & (steps >= 0.9 * target)
    return float(values[ok][-1]) if ok.any() else None


def published_dmc_name(g: Group) -> str | None:
    if is_drq_sac(g):
        return PUBLISHED_DMC.get(("drq_sac", g.flags["k"], g.flags["m"]))
    return PUBLISHED_DMC.get(g.algo)


def task_xmax(groups: list[Group], task: str, at_least: int = 1) -> float:
    """The step axis of a task's figures: every run's planned length (or more, if it logged more), so that an
    incomplete run visibly stops short of it."""
    return 1.05 * max([at_least] + [max(r.total_timesteps, r.last_step) for g in groups for r in g.members
                                    if r.env == task])


def section_dmc(rep: Report, groups: list[Group]) -> None:
    ref = read_dmc_reference()
    groups = [g for g in groups if g.domain == "dmc"]
    rep.add("## Question 1: DeepMind Control", "")
    if not groups:
        rep.add("No DMC runs found (algos " + ", ".join(f"`{a}`" for a in DMC_ALGOS) + ").", "")
        return
    colors = {g.label: f"C{i % 10}" for i, g in enumerate(groups)}
    rows, summary = [], {}
    for task in sorted({t for g in groups for t in g.envs()}):
        task_groups = [g for g in groups if task in g.envs()]
        fig, ax = plt.subplots(figsize=(12, 5.5), layout="constrained")
        for g in task_groups:
            plot_group(ax, g, task, "eval/episodic_return", colors[g.label])
            runs = g.by_env().get(task, [])
            incomplete = "; ".join(f"seed {r.seed} {incomplete_note(r)}" for r in g.by_env(False).get(task, []))
            pub_name = published_dmc_name(g)
            pub = {t: next((p for p in ref if p["task"] == task and p["env_steps"] == t and p["method"] == pub_name),
                           None) for t in (100_000, 500_000)}
            published = (f"{pub_name}: " + " / ".join(f"{p['mean']:.0f} ± {p['std']:.0f}" if p else "—"
                                                      for p in pub.values())) if pub_name else "—"
            if not runs:
                rows.append([task, g.label, 0, "—", "—", "—", incomplete or "—", published])
                continue
            finals = np.array([r.final["mean_return"] for r in runs])
            at = {t: [v for v in (value_at(r, "eval/episodic_return", t) for r in runs) if v is not None]
                  for t in (100_000, 500_000)}
            totals = sorted({r.final["total_timesteps"] for r in runs})
            summary.setdefault(task, {})[g.label] = {
                "seeds": len(runs), "final_mean": float(finals.mean()), "final_std": float(finals.std()),
                "final_ci95": list(mean_ci95(finals)[1:]), "total_timesteps": totals,
                **{f"at_{t // 1000}k": (float(np.mean(v)) if v else None) for t, v in at.items()}}

            def ms(v):
                if not v:
                    return "—"
                m, lo, hi = mean_ci95(v)
                return f"{m:.0f} [{lo:.0f}, {hi:.0f}] ({plural(len(v), 'seed')})" if len(v) > 1 \
                    else f"{m:.0f} (1 seed)"

            rows.append([task, g.label, len(runs), ms(at[100_000]), ms(at[500_000]),
                         ms(list(finals)) + " at " + "/".join(f"{t:,}" for t in totals), incomplete or "—",
                         published])
        # at least the 100k mark of the published numbers; their points beyond it only when runs go that far
        xmax = task_xmax(task_groups, task, at_least=100_000)
        curve = sorted((p for p in ref if p["task"] == task and p["method"].startswith(DMC_CURVE_METHOD)
                        and p["env_steps"] <= xmax), key=lambda p: p["env_steps"])
        if curve:
            x = np.array([p["env_steps"] for p in curve])
            m, s = np.array([p["mean"] for p in curve]), np.array([p["std"] for p in curve])
            ax.plot(x, m, "k--", lw=1.2, label="published DrQ K=2,M=2 curve (authors' 10 seeds, mean ± std)")
            ax.fill_between(x, m - s, m + s, color="k", alpha=0.08, lw=0)
        markers = iter("os^vD")
        for j, method in enumerate(DMC_PUBLISHED_METHODS):
            pts = sorted((p for p in ref if p["task"] == task and p["method"] == method and p["env_steps"] <= xmax),
                         key=lambda p: p["env_steps"])
            marker = next(markers)
            if not pts:
                continue
            # drawn in the colour of our group that reproduces it, so each curve meets its published mark
            color = next((colors[g.label] for g in task_groups if published_dmc_name(g) == method), "gray")
            numbers = ", ".join(f"{p['env_steps'] // 1000}k: {p['mean']:.0f} ± {p['std']:.0f}" for p in pts)
            # a small horizontal offset per method keeps the error bars at 100k / 500k apart
            ax.errorbar([p["env_steps"] + 0.012 * xmax * (j - 2) for p in pts], [p["mean"] for p in pts],
                        [p["std"] for p in pts], fmt=marker, ms=7, capsize=3, color=color, mfc="none", mew=1.5,
                        ls="none", label=f"published {method} ({numbers}, mean ± std)")
        ax.set_xlim(0, xmax)
        ax.set_ylim(-25, 1025)  # DMC returns lie in [0, 1000]: a fixed axis, never zoomed onto small differences
        ax.set_xlabel("environment steps (agent steps × action repeat)")
        ax.set_ylabel("evaluation episode return (mean over eval episodes)")
        ax.set_title(f"{task}: evaluation return over training")
        ax.grid(alpha=0.3)
        figure_legend(fig, ax)
        rep.figure(fig, f"dmc_eval_{task}.png",
                   f"{task}: evaluation return (metrics key eval/episodic_return) of each run group, mean over "
                   f"finished seeds with the {CI_NOTE} (one seed: its own curve), incomplete runs dashed, against "
                   "the published DrQ curve and the published 100k/500k numbers (mean ± std)")
    rep.add("Return at 100k / 500k environment steps: each finished seed's last evaluation at or before the mark "
            "(the spec's 'nearest eval <= target'; only when it is within 10% of the mark), mean over seeds "
            f"[{CI_NOTE}]. Final: final.json `mean_return` at the run's total_timesteps. Incomplete runs are "
            "named, never counted. Published: DrQ ICLR 2021 Table 1 (SAC pixels: third-party reprint), "
            "100k / 500k, mean ± std.", "",
            md_table(["task", "group", "finished seeds", "100k", "500k", "final", "incomplete runs (not counted)",
                      "published 100k / 500k"], rows), "")
    rep.summary["dmc"] = summary


def section_invariance(rep: Report, groups: list[Group]) -> None:
    rep.add("## Question 2: does the critic become invariant to the shifts?", "",
            "`invariance/q_mse_two_shifts`: mean squared difference between Q(s, a) under two independent random "
            "shifts of the same states; `invariance/q_mse_shift_vs_none`: between a shifted and the unshifted "
            "state. Lower means more invariant. DrQ (trained on shifted states) against the unaugmented "
            f"baselines, at every evaluation: mean over finished seeds with the {CI_NOTE}, incomplete runs "
            "dashed. A squared difference grows with the square of the Q values, which differ between runs, so "
            "the right panel divides the two-shift MSE by the square of the critic's mean Q logged at that point "
            "(`losses/q`).", "")
    logged = [g for g in groups if any(k in row for r in g.members for row in r.metrics() for k in INVARIANCE_KEYS)]
    if not logged:
        rep.add("No run logged the invariance metrics.", "")
        return
    colors = {g.label: f"C{i % 10}" for i, g in enumerate(groups)}
    for task in sorted({t for g in logged for t in g.envs()}):
        fig, axes = plt.subplots(1, 3, figsize=(18, 5), layout="constrained")
        panels = [(key, None, key.split("/")[1], "mean squared Q difference (Q units²)") for key in INVARIANCE_KEYS]
        panels.append((INVARIANCE_KEYS[0], relative_invariance, "q_mse_two_shifts / mean(Q)²",
                       "relative MSE (dimensionless)"))
        for ax, (key, series, title, ylabel) in zip(axes, panels):
            for g in logged:
                if task in g.envs():
                    plot_group(ax, g, task, key, colors[g.label], series)
            values = [y for line in ax.get_lines() for y in line.get_ydata()]
            if values and min(values) > 0:  # MSEs fall over orders of magnitude
                ax.set_yscale("log")
                ylabel += ", log scale"
            if not values:
                ax.text(0.5, 0.5, "no losses/q logged", ha="center", transform=ax.transAxes)
            ax.set_xlim(0, task_xmax(logged, task))
            ax.set_title(title)
            ax.set_xlabel("environment steps")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        figure_legend(fig, axes)
        fig.suptitle(f"{task}: critic invariance to random shifts over training (lower: more invariant)")
        rep.figure(fig, f"invariance_{task}.png", f"{task}: critic invariance to random shifts over training")


def section_runtime(rep: Report, groups: list[Group], benchmark_files: list[Path]) -> None:
    rep.add("## Question 3: what does DrQ cost?", "",
            "Wall time per step of every finished run: final.json `wall_time_s` (the whole run, evaluation "
            "included) / `total_timesteps`. On DMC a step is an environment step (agent steps × action repeat); on "
            "Atari an agent step (4 frames). Runs on different machines are not comparable; the benchmark below "
            "times the updates alone on one machine.", "")
    entries, rows = [], []
    for g in groups:
        if not g.runs:
            continue
        # Atari: one entry per group over all its games (26 per group would drown the chart); DMC: per task
        envs = ([(plural(len(g.by_env()), "game"), g.runs)] if g.domain == "atari" else sorted(g.by_env().items()))
        for env, runs in envs:
            per_step = [1e3 * r.final["wall_time_s"] / max(float(r.final["total_timesteps"]), 1) for r in runs]
            m, lo, hi = mean_ci95(per_step)
            count = plural(len(runs), "run" if g.domain == "atari" else "seed")  # Atari: seeds x games
            entries.append((f"{g.label} | {env} ({count})", g.domain, m, lo, hi))
            rows.append([g.label, env, len(runs), f"{m:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if len(runs) > 1 else ""),
                         f"{np.mean([r.final['wall_time_s'] for r in runs]) / 3600:.2f}"])
    if entries:
        rep.add(md_table(["group", "game/task", "finished runs", "ms per step (mean [95% CI])", "hours per run"],
                         rows), "")
        fig, ax = plt.subplots(figsize=(11, 1.8 + 0.35 * len(entries)), layout="constrained")
        # one bar call per domain, so the legend's patch is the colour of the bars it names
        for domain, color, name in (("dmc", "C0", "DMC: per environment step"), ("atari", "C1", "Atari: per agent "
                                    "step"), ("other", "C2", "other")):
            idx = [i for i, e in enumerate(entries) if e[1] == domain]
            if idx:
                ax.barh(idx, [entries[i][2] for i in idx], color=color, label=name)
        ci = [(i, e) for i, e in enumerate(entries) if np.isfinite(e[3])]
        if ci:
            ax.errorbar([e[2] for _, e in ci], [i for i, _ in ci], fmt="none", ecolor="k", capsize=3,
                        xerr=[[e[2] - e[3] for _, e in ci], [e[4] - e[2] for _, e in ci]],
                        label="95% CI over seeds")
        ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(left=0)
        ax.set_xlabel("wall time per step (ms), whole run including evaluation")
        ax.set_ylabel("run group | game/task")
        ax.set_title("Wall time per step of the finished runs")
        ax.grid(axis="x", alpha=0.3)
        figure_legend(fig, ax)
        rep.figure(fig, "wall_time_per_env_step.png",
                   "Wall time per step, mean over seeds with the 95% CI where there are several")
        rep.summary["wall_time_ms_per_step"] = {e[0]: e[2] for e in entries}
    else:
        rep.add("No finished run.", "")
    section_benchmark(rep, benchmark_files)


# Benchmark columns (benchmark_runtime.py), in the order shown; a column is shown when any row has a value, and a
# key with alternatives takes the first one present (`gflops` was the per-update GFLOP before `gflop`).
BENCH_TIME_COLUMNS = (
    (("variant",), "variant", "{}"), (("batch_size",), "B", "{:g}"), (("median_ms",), "median ms", "{:.2f}"),
    (("p25_ms",), "p25 ms", "{:.2f}"), (("p75_ms",), "p75 ms", "{:.2f}"), (("mean_ms",), "mean ms", "{:.2f}"),
    (("updates_per_s",), "updates/s", "{:.3g}"), (("cpu_median_ms",), "CPU ms (median)", "{:.0f}"),
    (("cpu_mean_ms",), "CPU ms (mean)", "{:.0f}"), (("user_s",), "user CPU s", "{:.3g}"),
    (("sys_s",), "system CPU s", "{:.3g}"), (("aug_ms",), "augmentation ms", "{:.2f}"),
    (("gflop", "gflops"), "GFLOP per update", "{:.1f}"), (("gflops_per_s",), "GFLOP/s", "{:.1f}"),
    (("baseline",), "baseline", "{}"), (("expected_cost_ratio",), "expected cost (FLOPs)", "{:.2f}"),
    (("measured_cost_ratio",), "measured cost (wall time)", "{:.2f}"),
    (("measured_cpu_ratio",), "measured cost (CPU time)", "{:.2f}"),
    (("overhead",), "measured / expected", "{:.2f}"), (("status",), "status", "{}"),
)
BENCH_PASS_COLUMNS = (
    (("variant",), "variant", "{}"), (("domain",), "domain", "{}"), (("device",), "device", "{}"),
    (("forward_passes",), "fwd", "{:g}"), (("forward_passes_unbatched",), "fwd x copies", "{:g}"),
    (("backward_passes",), "bwd", "{:g}"), (("encoder_fwd_samples",), "encoder fwd samples", "{:g}"),
    (("encoder_bwd_samples",), "encoder bwd samples", "{:g}"),
    (("buffer_bytes_per_transition",), "buffer B/transition", "{:.0f}"),
    (("peak_memory_mb",), "peak extra MB", "{:.0f}"), (("peak_rss_mb",), "peak RSS MB", "{:.0f}"),
    (("page_faults",), "page faults", "{:.0f}"), (("repeats",), "timed updates", "{:g}"), (("notes",), "notes", "{}"),
)


def _csv_value(v: str):
    if v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v


def read_benchmark(path: Path) -> tuple[list[dict], dict]:
    """Rows and meta of a benchmark_runtime.py output, from its .json or, without meta, its .csv."""
    if path.suffix == ".csv":
        try:
            with open(path, newline="") as f:
                rows = [{k: _csv_value(v) for k, v in r.items() if k} for r in csv.DictReader(f)]
        except (OSError, csv.Error) as e:
            fail(f"cannot read {path}: {e}")
        if rows and "variant" not in rows[0]:
            fail(f"{path} has no variant column; it was not written by benchmark_runtime.py")
        return rows, {}
    data = read_json(path)
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "variant" in r for r in rows):
        fail(f"{path} has no list of rows with a variant; it was not written by benchmark_runtime.py")
    return rows, data.get("meta", {})


def bench_table(rows: list[dict], columns, extra: list[str] = ()) -> str:
    def value(r, keys):
        return next((r[k] for k in keys if r.get(k) is not None), None)

    shown = [c for c in columns if c[0] == ("variant",) or any(value(r, c[0]) is not None for r in rows)]
    shown += [((k,), k, "{:.4g}") for k in extra]
    table = []
    for r in rows:
        cells = []
        for keys, _, spec in shown:
            v = value(r, keys)
            try:
                cells.append("—" if v is None else spec.format(v))
            except (TypeError, ValueError):
                cells.append(str(v))
        table.append(cells)
    return md_table([h for _, h, _ in shown], table)


def section_benchmark(rep: Report, benchmark_files: list[Path]) -> None:
    rep.add("### Update cost (benchmark_runtime.py)", "")
    if not benchmark_files:
        rep.add("No benchmark output found (run `python benchmark_runtime.py`, which writes "
                "results/benchmark_<device>.json and .csv).", "")
        return
    known = {k for cols in (BENCH_TIME_COLUMNS, BENCH_PASS_COLUMNS) for keys, _, _ in cols for k in keys}
    for path in benchmark_files:
        rows, meta = read_benchmark(path)
        # columns a newer benchmark_runtime.py adds still reach the report, after the known ones
        extra = sorted({k for r in rows for k, v in r.items() if k not in known and v is not None
                        and isinstance(v, (int, float, str))})
        rep.add(f"`{path.name}`: {meta.get('machine', 'machine not recorded')} — command "
                f"`{meta.get('command', 'not recorded')}`", "",
                "Time and cost per update:", "", bench_table(rows, BENCH_TIME_COLUMNS), "",
                "Passes per update, memory:", "", bench_table(rows, BENCH_PASS_COLUMNS, extra), "",
                "Per update: forward passes = calls of an encoder, MLP or Q network (`fwd x copies` counts each "
                "augmented copy as its own pass); backward = loss.backward calls; encoder samples = images "
                "through a conv stack. Expected and measured cost are relative to the baseline without "
                "augmentation (sac_pixels on DMC, nddqn_atari on Atari); measured above expected is overhead.", "")
        timed = [r for r in rows if isinstance(r.get("median_ms"), (int, float))]
        if timed:
            rep.figure(benchmark_figure(timed, meta, path), f"{path.stem}.png",
                       f"Update time per variant ({path.name}): median with interquartile range, the augmentation "
                       "alone, and the cost relative to the unaugmented baseline")


def benchmark_figure(rows: list[dict], meta: dict, path: Path):
    ratios = [("expected_cost_ratio", "expected (FLOPs)", "0.6", None),
              ("measured_cost_ratio", "measured (wall time)", "C2", None),
              ("measured_cpu_ratio", "measured (CPU time)", "C3", "//")]
    ratios = [r for r in ratios if any(isinstance(x.get(r[0]), (int, float)) for x in rows)]
    fig, axes = plt.subplots(1, 2 if ratios else 1, figsize=(14, 2.2 + 0.45 * len(rows)), layout="constrained",
                             squeeze=False, **({"gridspec_kw": {"width_ratios": [3, 2]}} if ratios else {}))
    axes = axes[0]
    y = np.arange(len(rows))
    domains = [r.get("domain") or ("dmc" if "sac" in str(r["variant"]) else "atari") for r in rows]
    # one bar call per domain, so the legend's patch is the colour of the bars it names
    for domain, color in (("dmc", "C0"), ("atari", "C1")):
        idx = [i for i, d in enumerate(domains) if d == domain]
        if idx:
            axes[0].barh(idx, [rows[i]["median_ms"] for i in idx], color=color,
                         label=f"update, {'DMC' if domain == 'dmc' else 'Atari'} (median)")
    others = [i for i, d in enumerate(domains) if d not in ("dmc", "atari")]
    if others:
        axes[0].barh(others, [rows[i]["median_ms"] for i in others], color="C4", label="update (median)")
    iqr = [i for i, r in enumerate(rows) if isinstance(r.get("p25_ms"), (int, float))
           and isinstance(r.get("p75_ms"), (int, float))]
    if iqr:
        axes[0].errorbar([rows[i]["median_ms"] for i in iqr], iqr, fmt="none", ecolor="k", capsize=3,
                         xerr=[[max(rows[i]["median_ms"] - rows[i]["p25_ms"], 0) for i in iqr],
                               [max(rows[i]["p75_ms"] - rows[i]["median_ms"], 0) for i in iqr]],
                         label="interquartile range")
    aug = [i for i, r in enumerate(rows) if isinstance(r.get("aug_ms"), (int, float)) and r["aug_ms"] > 0]
    if aug:
        axes[0].barh(aug, [rows[i]["aug_ms"] for i in aug], color="k", height=0.35, label="augmentation alone")
    axes[0].set_yticks(y, [f"{r['variant']} (B={r.get('batch_size', '?'):g})"
                           if isinstance(r.get("batch_size"), (int, float)) else str(r["variant"]) for r in rows],
                       fontsize=8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per update (log scale)")
    axes[0].set_ylabel("variant (batch size)")
    axes[0].set_title("time per update")
    axes[0].invert_yaxis()
    axes[0].grid(axis="x", alpha=0.3)
    if ratios:
        h = 0.8 / len(ratios)
        for j, (key, name, color, hatch) in enumerate(ratios):
            idx = [i for i, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
            axes[1].barh(np.array(idx) + (j - (len(ratios) - 1) / 2) * h, [rows[i][key] for i in idx], height=h,
                         color=color, hatch=hatch, edgecolor="w" if hatch else None, label=f"cost ratio, {name}")
        axes[1].axvline(1.0, color="k", lw=1, label="baseline (cost 1)")
        axes[1].set_yticks(y, [""] * len(rows))
        axes[1].set_ylim(axes[0].get_ylim())
        axes[1].set_xlabel("cost relative to the baseline (×)")
        axes[1].set_title("relative to sac_pixels (DMC) / nddqn_atari (Atari)")
        axes[1].grid(axis="x", alpha=0.3)
    figure_legend(fig, axes, loc="outside lower center", ncols=4)
    fig.suptitle(f"Update cost per variant: {meta.get('machine', path.name)}, "
                 f"{meta.get('device', 'device not recorded')}")
    return fig


def default_benchmark_files() -> list[Path]:
    """results/benchmark_<device>.json, or its .csv where there is no .json; --quick smoke checks are no
    measurement."""
    stems = {}
    for p in sorted((PROJECT_DIR / "results").glob("benchmark_*")):
        if p.suffix in (".json", ".csv") and not p.stem.endswith("_quick"):
            if p.suffix == ".json" or p.stem not in stems:
                stems[p.stem] = p
    return [stems[s] for s in sorted(stems)]


def main(args: Args) -> Path:
    if args.bootstrap_reps < 1:
        fail("--bootstrap-reps must be at least 1")
    runs, unusable = load_runs(Path(args.runs_dir))
    groups = group_runs(runs, args.merge_code_versions)
    if args.benchmark is None:
        benchmark_files = default_benchmark_files()
    else:
        benchmark_files = [Path(p) for p in args.benchmark]
        for p in benchmark_files:
            if not p.exists():
                fail(f"benchmark file {p} does not exist")
            if p.suffix not in (".json", ".csv"):
                fail(f"benchmark file {p} is neither .json nor .csv")
    out_dir = Path(args.out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir / "figures", ignore_errors=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    rep = Report(args, out_dir)
    finished = sum(r.finished for r in runs)
    rep.add("# DrQ reproduction report", "",
            f"Generated by `{command_line(args)}` from "
            f"{plural(finished, 'finished run')} and {plural(len(runs) - finished, 'incomplete run')}. Published "
            "numbers: this project's reference/ folder.", "")
    section_runs(rep, runs, unusable, groups)
    section_atari(rep, groups)
    section_dmc(rep, groups)
    section_invariance(rep, [g for g in groups if g.domain == "dmc"])
    section_runtime(rep, groups, benchmark_files)
    rep.summary["figures"] = rep.figures
    (out_dir / "report.md").write_text("\n".join(rep.md) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(rep.summary, indent=2, default=str))
    print(f"report written to {out_dir / 'report.md'} ({len(rep.figures)} figures)")
    return out_dir / "report.md"


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Turn finished runs into the answers of the reproduction: a self-contained Markdown report with PNG figures.

    python report.py --runs-dir runs --out-dir report

Reads only `runs/*/final.json`, `runs/*/args.json` and `runs/*/metrics.jsonl` (the output contract in
CONTRIBUTING.md), the published numbers shipped in this project's `reference/` folder and, if present, the
benchmark output of benchmark_runtime.py (`results/benchmark_*.json`). No network.

- Question 1, Atari 100k: the reproduction report's Table 1 layout (mean final score over seeds per game, next to
  the published columns), median / mean / IQM human-normalised score (HNS) with 95% percentile stratified-bootstrap
  confidence intervals (the rliable method, written with numpy), seeds per game, the probability that DrQ improves
  on NDDQN, and the games without runs.
- Question 1, DMC: evaluation return against environment steps, mean and a +-1 std band over seeds, with the
  authors' DrQ learning curve and the published 100k / 500k numbers on the same axes.
- Question 2: critic invariance over training (`invariance/q_mse_two_shifts`, `invariance/q_mse_shift_vs_none`).
- Question 3: wall time per environment step of every run, and the benchmark table.

Runs are grouped by (algo, code_version, flags): runs that differ in any configuration flag are never averaged
together. Unfinished runs (no final.json) are listed, never silently dropped.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = PROJECT_DIR / "reference"
ATARI_ALGOS = ("nddqn_atari", "drq_dqn")
DMC_ALGOS = ("sac_state", "sac_pixels", "drq_sac", "sac_ae")
FINAL_KEYS = ("env_id", "algo", "seed", "total_timesteps", "mean_return", "wall_time_s")
# Flags that name a run or its bookkeeping, not its configuration: they never split a group.
NON_CONFIG_FLAGS = {
    "seed", "env_id", "run_name", "runs_dir", "track", "wandb_project_name", "wandb_entity", "wandb_group",
    "wandb_mode", "capture_video", "save_model", "eval_checkpoint", "cuda", "torch_deterministic", "algo",
    "code_version",
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
    "sac_ae": "SAC-AE",
    "sac_state": "SAC State",
    "sac_pixels": "SAC (pixels)",
}
DMC_PUBLISHED_METHODS = ("DrQ K=2,M=2", "DrQ K=1,M=1", "SAC-AE", "SAC State", "SAC (pixels)")
INVARIANCE_KEYS = ("invariance/q_mse_two_shifts", "invariance/q_mse_shift_vs_none")


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding one sub-folder per run (the training scripts' --runs-dir)"""
    out_dir: str = "report"
    """folder the report is written to (report.md, figures/, summary.json); created or overwritten"""
    bootstrap_reps: int = 10000
    """stratified-bootstrap resamples for every confidence interval (rliable uses 50,000)"""
    seed: int = 0
    """seed of the bootstrap, so a report is reproducible"""
    benchmark: list[str] | None = None
    """benchmark_runtime.py JSON outputs to include; default: results/benchmark_*.json next to this script (not --quick ones)"""


def fail(message: str):
    raise SystemExit(f"error: {message}")


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
    """'cartpole-swingup' (or 'cartpole_swingup', 'dmc/cartpole-swingup-v0') -> 'cartpole_swingup'."""
    name = env_id.split("/")[-1]
    if name.endswith("-v0") or name.endswith("-v1"):
        name = name[:-3]
    return name.replace("-", "_")


@dataclass
class Run:
    path: Path
    final: dict
    args: dict

    @property
    def algo(self) -> str:
        return str(self.final["algo"])

    @property
    def env_id(self) -> str:
        return str(self.final["env_id"])

    @property
    def seed(self):
        return self.final["seed"]

    @property
    def code_version(self) -> str:
        return str(self.final.get("code_version", self.args.get("code_version", "unknown")))

    @property
    def domain(self) -> str:
        if self.algo in ATARI_ALGOS or "NoFrameskip" in self.env_id or self.env_id.startswith("ALE/"):
            return "atari"
        if self.algo in DMC_ALGOS or "action_repeat" in self.final:  # DMC scripts record their action repeat
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
            rows = []
            with open(path) as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        fail(f"{path} line {i} is not valid JSON ({e.msg}); delete or fix that run")
                    if not isinstance(row, dict) or "global_step" not in row:
                        fail(f"{path} line {i} has no global_step; delete or fix that run")
                    rows.append(row)
            self._metrics = rows
        return self._metrics

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(global_step, value) of one metric key, sorted by step."""
        pts = sorted((float(r["global_step"]), float(r[key])) for r in self.metrics()
                     if key in r and r[key] is not None and np.isfinite(float(r[key])))
        if not pts:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*pts)
        return np.array(steps), np.array(values)


def load_runs(runs_dir: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs (with final.json) and the folders of unfinished ones. Malformed files are one-line errors."""
    if not runs_dir.exists():
        fail(f"runs folder '{runs_dir}' does not exist (pass --runs-dir)")
    if not runs_dir.is_dir():
        fail(f"'{runs_dir}' is not a folder (pass the training scripts' --runs-dir)")
    runs, unfinished = [], []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if not (d / "final.json").exists():
            unfinished.append(d)
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
        detail = f"; {len(unfinished)} unfinished run folder(s) without final.json" if unfinished else ""
        fail(f"no finished runs in '{runs_dir}' (no */final.json){detail}")
    return runs, unfinished


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
        r["env_steps"], r["mean"], r["std"] = int(r["env_steps"]), float(r["mean"]), float(r["std"])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Grouping: one group per (algo, code_version, configuration flags)
# ---------------------------------------------------------------------------------------------------------------


def _freeze(v):
    return json.dumps(v, sort_keys=True, default=str)


@dataclass
class Group:
    algo: str
    code_version: str
    flags: dict
    runs: list[Run] = field(default_factory=list)
    label: str = ""
    per_env_flags: dict = field(default_factory=dict)

    def by_env(self) -> dict[str, list[Run]]:
        out = defaultdict(list)
        for r in self.runs:
            out[r.env].append(r)
        return dict(out)

    @property
    def domain(self) -> str:
        return self.runs[0].domain


def per_env_flag_names(runs: list[Run]) -> set[str]:
    """Flags of DMC runs of one algo that are constant within every task but differ across tasks (for example the
    per-task action repeat, spec §1.4). They do not split groups: figures are per task, so no two runs with a
    different value are ever averaged. Atari groups are aggregated across games, so there every flag counts."""
    by_flag_env = defaultdict(lambda: defaultdict(set))
    for r in runs:
        for k, v in r.args.items():
            by_flag_env[k][r.env].add(_freeze(v))
    names = set()
    for k, envs in by_flag_env.items():
        if all(len(vals) == 1 for vals in envs.values()) and len(set().union(*envs.values())) > 1:
            names.add(k)
    return names


def group_runs(runs: list[Run]) -> list[Group]:
    per_env = {}
    for algo in {r.algo for r in runs}:
        algo_runs = [r for r in runs if r.algo == algo]
        per_env[algo] = per_env_flag_names(algo_runs) if algo_runs[0].domain == "dmc" else set()
    groups: dict[tuple, Group] = {}
    for r in runs:
        flags = {k: v for k, v in r.args.items() if k not in NON_CONFIG_FLAGS and k not in per_env[r.algo]}
        key = (r.algo, r.code_version, _freeze(flags))
        if key not in groups:
            groups[key] = Group(r.algo, r.code_version, flags)
        groups[key].runs.append(r)
    out = sorted(groups.values(), key=lambda g: (g.algo, g.code_version, _freeze(g.flags)))
    for g in out:
        for k in per_env[g.algo]:
            g.per_env_flags[k] = {env: rs[0].args.get(k) for env, rs in sorted(g.by_env().items())}
    _label_groups(out)
    return out


def is_drq_sac(g: Group) -> bool:
    """drq_sac.py runs (also under another --exp-name, which becomes `algo`): DMC runs with DrQ's K and M flags."""
    return g.domain == "dmc" and "k" in g.flags and "m" in g.flags


def _label_groups(groups: list[Group]) -> None:
    """algo (plus K, M for drq_sac), then whatever distinguishes groups of the same algo: the code version and the
    flags whose values differ between them."""
    by_algo = defaultdict(list)
    for g in groups:
        by_algo[g.algo].append(g)
    for algo, gs in by_algo.items():
        for g in gs:
            base = algo
            drq_dmc = is_drq_sac(g)
            if drq_dmc:
                base += f" K={g.flags['k']},M={g.flags['m']}"
            extra = []
            if len({x.code_version for x in gs}) > 1:
                extra.append(f"@{g.code_version}")
            keys = sorted(set().union(*[x.flags.keys() for x in gs]))
            diff = [k for k in keys if len({_freeze(x.flags.get(k)) for x in gs}) > 1]
            if drq_dmc:
                diff = [k for k in diff if k not in ("k", "m")]
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
    fig.tight_layout()
    fig.savefig(out_dir / "figures" / name, dpi=110)
    plt.close(fig)
    return f"figures/{name}"


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


def section_runs(rep: Report, runs: list[Run], unfinished: list[Path], groups: list[Group]) -> None:
    rep.add("## Runs", "",
            f"{len(runs)} finished runs in {len(groups)} group(s). A group is one (algo, code version, flags) "
            "configuration; runs from different groups are never averaged together.", "")
    rows = []
    for g in groups:
        envs = g.by_env()
        seeds = sorted({len(v) for v in envs.values()})
        rows.append([g.label, g.algo, g.code_version, len(g.runs), len(envs),
                     "-".join(map(str, [seeds[0], seeds[-1]])) if len(seeds) > 1 else seeds[0]])
    rep.add(md_table(["group", "algo", "code version", "runs", "games/tasks", "seeds per game/task"], rows), "")
    for g in groups:
        shown = {k: v for k, v in g.flags.items() if k not in ("exp_name",)}
        text = ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items()))
        rep.add(f"- **{g.label}** flags: {text or '(none recorded)'}")
        for k, per_env in g.per_env_flags.items():
            rep.add(f"  - per task `{k}`: " + ", ".join(f"{e}={v}" for e, v in per_env.items()))
    rep.add("")
    if unfinished:
        rep.add(f"**Unfinished runs (no final.json), not included ({len(unfinished)}):** "
                + ", ".join(f"`{p.name}`" for p in unfinished), "")
    rep.summary["groups"] = [{"label": g.label, "algo": g.algo, "code_version": g.code_version, "flags": g.flags,
                              "runs": [r.path.name for r in g.runs]} for g in groups]
    rep.summary["unfinished_runs"] = [p.name for p in unfinished]


def section_atari(rep: Report, groups: list[Group]) -> None:
    ref = read_atari_reference()
    ref_by_game = {r["game"]: r for r in ref}
    games = [r["game"] for r in ref]
    groups = [g for g in groups if g.domain == "atari"]
    rep.add("## Question 1: Atari 100k", "")
    if not groups:
        rep.add("No Atari runs found (algos `nddqn_atari`, `drq_dqn`); the published columns are shown alone.", "")

    # Per group and game: run scores (mean_return of final.json) and their HNS.
    scores = {g.label: {game: np.array([r.final["mean_return"] for r in rs], dtype=float)
                        for game, rs in g.by_env().items()} for g in groups}
    hns = {label: {game: human_normalized(s, ref_by_game[game]["random"], ref_by_game[game]["human"])
                   for game, s in per_game.items() if game in ref_by_game}
           for label, per_game in scores.items()}

    # Table 1 layout: per game, our means over seeds (n seeds), then the published columns.
    header = ["Game", "Random", "Human"] + [f"{g.label} (ours)" for g in groups] + [n for _, n in PUBLISHED_ATARI]
    rows = []
    for game in games:
        r = ref_by_game[game]
        row = [game, fmt(r["random"]), fmt(r["human"])]
        for g in groups:
            s = scores[g.label].get(game)
            row.append(f"{s.mean():.1f} (n={len(s)})" if s is not None else "missing")
        row += [fmt(r[col]) for col, _ in PUBLISHED_ATARI]
        rows.append(row)
    summary = {"groups": {}, "published": {}}
    for name, agg in (("Median HNS", aggregate_median), ("Mean HNS", aggregate_mean)):
        row = [f"**{name}**", "", ""]
        for g in groups:
            per_game = list(hns[g.label].values())
            row.append(fmt(point_estimate(agg, per_game), 3) if per_game else "—")
        for col, _ in PUBLISHED_ATARI:
            v = point_estimate(agg, [[human_normalized(r[col], r["random"], r["human"])] for r in ref])
            summary["published"].setdefault(col, {})[name.split()[0].lower()] = v
            row.append(fmt(v, 3))
        rows.append(row)
    rep.add("### Table 1 layout: mean final score over seeds", "",
            "Our columns: mean over seeds of each run's final evaluation return (`mean_return` in final.json), "
            "with the number of seeds. Aggregates over the games with runs (all 26 for the published columns). "
            "Published columns: reference/atari_100k_scores.csv (spec §2.5, §2.6; the reproduction report's "
            "Table 1). HNS here is recomputed with the standard human/random table (spec §3) for every column.", "",
            md_table(header, rows), "")

    # Missing and unknown games, and runs off the benchmark's protocol.
    for g in groups:
        steps = sorted({r.final["total_timesteps"] for r in g.runs})
        if steps != [100_000]:
            rep.add(f"- **{g.label}: trained for {', '.join(map(str, steps))} agent steps, not the 100k of the "
                    "benchmark**: not comparable with the published columns.")
        present = set(scores[g.label])
        missing = [x for x in games if x not in present]
        unknown = sorted(present - set(games))
        summary["groups"][g.label] = {"missing_games": missing, "unknown_games": unknown,
                                      "seeds_per_game": {x: int(len(v)) for x, v in scores[g.label].items()}}
        if missing:
            rep.add(f"- **{g.label}: missing games ({len(missing)}/26), aggregates use the other "
                    f"{26 - len(missing)}:** {', '.join(missing)}")
        else:
            rep.add(f"- **{g.label}:** all 26 games present.")
        if unknown:
            rep.add(f"  - not among the 26 Atari-100k games, left out of HNS: {', '.join(unknown)}")
    rep.add("")

    # Aggregates with CIs.
    if groups:
        reps, seed = rep.args.bootstrap_reps, rep.args.seed
        rows = []
        for g in groups:
            per_game = list(hns[g.label].values())
            if not per_game:
                continue
            res = {name: interval_estimate(fn, per_game, reps=reps, seed=seed) for name, fn in AGGREGATES.items()}
            summary["groups"][g.label].update({k: {"point": v[0], "ci95": [v[1], v[2]]} for k, v in res.items()})
            n = sorted({len(x) for x in per_game})
            rows.append([g.label, len(per_game), f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"]
                        + [f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for v in res.values()])
        rep.add("### Aggregate human-normalised scores, 95% stratified-bootstrap CIs", "",
                f"Percentile stratified bootstrap (rliable): {reps} resamples, runs redrawn with replacement within "
                f"each game, seed {seed}. Median and mean are over the per-game means; IQM is the 25%-trimmed mean "
                "of all (run, game) scores; the optimality gap is 1 - mean(min(HNS, 1)). With a few seeds per game "
                "the CIs only reflect seed-to-seed variation of the runs we have.", "",
                md_table(["group", "games", "seeds per game", "median", "mean", "IQM", "optimality gap"], rows), "")
        fig, axes = plt.subplots(1, 3, figsize=(13, 0.6 * (len(groups) + len(PUBLISHED_ATARI)) + 1.8))
        labels = [g.label for g in groups if hns[g.label]]
        pub = [(col, name) for col, name in PUBLISHED_ATARI]
        for ax, key in zip(axes, ("median", "mean", "iqm")):
            for i, label in enumerate(labels):
                v = summary["groups"][label][key]
                ax.errorbar(v["point"], i, xerr=[[v["point"] - v["ci95"][0]], [v["ci95"][1] - v["point"]]],
                            fmt="o", color=f"C{i}", capsize=4)
            if key != "iqm":  # the published columns are per-game means: no runs, so no CI and no IQM
                for j, (col, _) in enumerate(pub):
                    ax.plot(summary["published"][col][key], len(labels) + j, "s", color="gray")
            ax.set_yticks(range(len(labels) + len(pub)), labels + [f"published: {n}" for _, n in pub])
            ax.set_title(key.upper() if key == "iqm" else key)
            ax.set_xlabel("human-normalised score")
            ax.grid(axis="x", alpha=0.3)
            ax.invert_yaxis()
        for ax in axes[1:]:
            ax.set_yticklabels([])
        rep.figure(fig, "atari_aggregates.png",
                   "Atari 100k aggregate HNS: ours with 95% stratified-bootstrap CIs (dots), published per-game "
                   "means (squares; IQM needs per-run scores, which the published tables lack)")
        section_probability_of_improvement(rep, groups, hns, summary)
    rep.summary["atari"] = summary


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
    rows, summary["probability_of_improvement"] = [], {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.5 * max(len(pairs), 6)),
                             gridspec_kw={"width_ratios": [1, 2]})
    for i, (x, y) in enumerate(pairs):
        common = [game for game in hns[x.label] if game in hns[y.label]]
        xs, ys = [hns[x.label][g] for g in common], [hns[y.label][g] for g in common]
        p, lo, hi = interval_estimate(probability_of_improvement, xs, ys, reps=rep.args.bootstrap_reps,
                                      seed=rep.args.seed)
        per_game = {g: float(probability_of_improvement_per_game(a, b)) for g, a, b in zip(common, xs, ys)}
        summary["probability_of_improvement"][f"{x.label} > {y.label}"] = {
            "point": p, "ci95": [lo, hi], "games": len(common), "per_game": per_game}
        rows.append([x.label, y.label, len(common), f"{p:.3f} [{lo:.3f}, {hi:.3f}]"])
        axes[0].errorbar(p, i, xerr=[[p - lo], [hi - p]], fmt="o", color=f"C{i}", capsize=4)
        order = sorted(per_game)
        axes[1].bar(np.arange(len(order)) + 0.8 * i / len(pairs), [per_game[g] for g in order],
                    width=0.8 / len(pairs), color=f"C{i}", label=f"{x.label} > {y.label}")
        axes[1].set_xticks(np.arange(len(order)), order, rotation=90)
    axes[0].axvline(0.5, color="k", ls="--", lw=1)
    axes[0].set_yticks(range(len(pairs)), [f"P({x.label} > {y.label})" for x, y in pairs])
    axes[0].set_xlim(0, 1)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("probability of improvement")
    axes[1].axhline(0.5, color="k", ls="--", lw=1)
    axes[1].set_ylabel("P(X > Y) per game")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    rep.add(md_table(["X", "Y", "common games", "P(X > Y) [95% CI]"], rows), "")
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


def eval_curve(runs: list[Run], key: str, series=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """steps, mean, std (ddof 0) and number of seeds at every step logged by at least one seed; `series(run, key)`
    overrides where the values come from (default: the metric itself)."""
    per_step = defaultdict(list)
    for r in runs:
        for s, v in zip(*(series(r, key) if series else r.series(key))):
            per_step[s].append(v)
    steps = np.array(sorted(per_step))
    if not len(steps):
        return steps, steps, steps, steps
    vals = [np.array(per_step[s]) for s in steps]
    return (steps, np.array([v.mean() for v in vals]), np.array([v.std() for v in vals]),
            np.array([len(v) for v in vals]))


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


def section_dmc(rep: Report, groups: list[Group]) -> None:
    ref = read_dmc_reference()
    groups = [g for g in groups if g.domain == "dmc"]
    rep.add("## Question 1: DeepMind Control", "")
    if not groups:
        rep.add("No DMC runs found (algos " + ", ".join(f"`{a}`" for a in DMC_ALGOS) + ").", "")
        return
    tasks = sorted({t for g in groups for t in g.by_env()})
    rows, summary = [], {}
    for task in tasks:
        fig, ax = plt.subplots(figsize=(8, 5))
        task_groups = [g for g in groups if task in g.by_env()]
        for i, g in enumerate(groups):
            if g not in task_groups:
                continue
            runs = g.by_env()[task]
            steps, mean, std, n = eval_curve(runs, "eval/episodic_return")
            if len(steps):
                ax.plot(steps, mean, color=f"C{i}", label=f"{g.label} (ours, {len(runs)} seeds)")
                ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2)
            finals = np.array([r.final["mean_return"] for r in runs])
            at = {t: [v for v in (value_at(r, "eval/episodic_return", t) for r in runs) if v is not None]
                  for t in (100_000, 500_000)}
            pub_name = published_dmc_name(g)
            pub = {t: next((p for p in ref if p["task"] == task and p["env_steps"] == t and p["method"] == pub_name),
                           None) for t in (100_000, 500_000)}
            summary.setdefault(task, {})[g.label] = {
                "seeds": len(runs), "final_mean": float(finals.mean()), "final_std": float(finals.std()),
                "total_timesteps": sorted({r.final["total_timesteps"] for r in runs}),
                **{f"at_{t // 1000}k": (float(np.mean(v)) if v else None) for t, v in at.items()}}

            def ms(v):
                return f"{np.mean(v):.0f} ± {np.std(v):.0f} (n={len(v)})" if v else "—"

            rows.append([task, g.label, len(runs), ms(at[100_000]), ms(at[500_000]),
                         f"{finals.mean():.0f} ± {finals.std():.0f} at "
                         + "/".join(str(t) for t in summary[task][g.label]["total_timesteps"]),
                         f"{pub_name}: " + " / ".join(f"{p['mean']:.0f} ± {p['std']:.0f}" if p else "—"
                                                      for p in pub.values()) if pub_name else "—"])
        # x range: our runs, at least up to the 100k mark; published points beyond it only when runs reach them
        xmax = 1.05 * max([100_000] + [float(r.final["total_timesteps"]) for g in task_groups
                                       for r in g.by_env()[task]])
        curve = sorted((p for p in ref if p["task"] == task and p["method"].startswith("DrQ K=2,M=2 learning")
                        and p["env_steps"] <= xmax), key=lambda p: p["env_steps"])
        if curve:
            x = np.array([p["env_steps"] for p in curve])
            m, s = np.array([p["mean"] for p in curve]), np.array([p["std"] for p in curve])
            ax.plot(x, m, "k--", label="DrQ K=2,M=2 authors' rerun (10 seeds)")
            ax.fill_between(x, m - s, m + s, color="k", alpha=0.1)
        markers = iter("os^vDP*")
        for j, method in enumerate(DMC_PUBLISHED_METHODS):
            pts = sorted((p for p in ref if p["task"] == task and p["method"] == method and p["env_steps"] <= xmax),
                         key=lambda p: p["env_steps"])
            if pts:  # a small horizontal offset per method keeps the error bars at 100k / 500k apart
                ax.errorbar([p["env_steps"] + 0.012 * xmax * (j - 2) for p in pts], [p["mean"] for p in pts],
                            [p["std"] for p in pts],
                            fmt=next(markers), ms=6, capsize=3, alpha=0.7, color="gray" if "DrQ" not in method
                            else "k", mfc="none", ls="none", label=f"published {method} (100k/500k)")
        ax.set_xlim(-0.02 * xmax, xmax)
        ax.set_xlabel("environment steps (agent steps x action repeat)")
        ax.set_ylabel("evaluation return")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        rep.figure(fig, f"dmc_eval_{task}.png",
                   f"{task}: evaluation return (metrics key eval/episodic_return), mean and ±1 std over seeds, "
                   "against the published DrQ curve and 100k/500k numbers (mean ± std)")
    rep.add("Return at 100k / 500k environment steps: each seed's last evaluation at or before the mark (the "
            "spec's 'nearest eval <= target'; only when it is within 10% of the mark), mean ± std over seeds. "
            "Final: final.json `mean_return` at the run's total_timesteps. Published: DrQ ICLR 2021 Table 1 "
            "(SAC pixels: third-party reprint), 100k / 500k.", "",
            md_table(["task", "group", "seeds", "100k", "500k", "final", "published 100k / 500k"], rows), "")
    rep.summary["dmc"] = summary


def section_invariance(rep: Report, groups: list[Group]) -> None:
    rep.add("## Question 2: does the critic become invariant to the shifts?", "",
            "`invariance/q_mse_two_shifts`: mean squared difference between Q(s, a) under two independent random "
            "shifts of the same states; `invariance/q_mse_shift_vs_none`: between a shifted and the unshifted "
            "state. Lower means more invariant. DrQ (trained on shifted states) against the unaugmented "
            "baselines. Mean and ±1 std over seeds. A squared difference grows with the square of the Q values, "
            "which differ between runs, so the right panel divides the two-shift MSE by the square of the "
            "critic's mean Q logged at that point (`losses/q`).", "")
    logged = [g for g in groups if any(k in row for r in g.runs for row in r.metrics() for k in INVARIANCE_KEYS)] \
        if groups else []
    if not logged:
        rep.add("No run logged the invariance metrics.", "")
        return
    for task in sorted({t for g in logged for t in g.by_env()}):
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
        panels = [(key, None, key, "mean squared Q difference") for key in INVARIANCE_KEYS]
        panels.append((INVARIANCE_KEYS[0], relative_invariance, "q_mse_two_shifts / mean(Q)^2", "relative MSE"))
        for ax, (key, series, title, ylabel) in zip(axes, panels):
            for i, g in enumerate(groups):
                if g not in logged or task not in g.by_env():
                    continue
                steps, mean, std, _ = eval_curve(g.by_env()[task], key, series)
                if len(steps):
                    ax.plot(steps, mean, color=f"C{i}", label=g.label)
                    ax.fill_between(steps, np.maximum(mean - std, mean * 0.1), mean + std, color=f"C{i}", alpha=0.2)
            if all(min(line.get_ydata(), default=1) > 0 for line in ax.get_lines()):
                ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("environment steps")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no losses/q logged", ha="center", transform=ax.transAxes)
        fig.suptitle(task)
        rep.figure(fig, f"invariance_{task}.png", f"{task}: critic invariance to random shifts over training")


def section_runtime(rep: Report, groups: list[Group], benchmark_files: list[Path]) -> None:
    rep.add("## Question 3: what does DrQ cost?", "",
            "Wall time per environment step of every finished run: final.json `wall_time_s` (the whole run, "
            "evaluation included) / `total_timesteps`. On DMC a step is an environment step (agent steps x "
            "action repeat); on Atari an agent step (4 frames). Runs on different machines are not comparable; "
            "the benchmark below times the updates alone on one machine.", "")
    labels, means, stds, rows = [], [], [], []
    for g in groups:
        # Atari: one entry per group over all its games (26 per group would drown the chart); DMC: per task
        envs = ([(f"{len(g.by_env())} game(s)", g.runs)] if g.domain == "atari"
                else sorted(g.by_env().items()))
        for env, runs in envs:
            per_step = np.array([r.final["wall_time_s"] / max(float(r.final["total_timesteps"]), 1) for r in runs])
            labels.append(f"{g.label} | {env}")
            means.append(per_step.mean() * 1e3)
            stds.append(per_step.std() * 1e3)
            rows.append([g.label, env, len(runs), f"{means[-1]:.3f} ± {stds[-1]:.3f}",
                         f"{np.mean([r.final['wall_time_s'] for r in runs]) / 3600:.2f}"])
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * len(labels)))
    ax.barh(range(len(labels)), means, xerr=stds, color=[f"C{i % 10}" for i in range(len(labels))], capsize=3)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall time per environment step (ms)")
    ax.grid(axis="x", alpha=0.3)
    rep.add(md_table(["group", "game/task", "runs", "ms per env step (mean ± std)", "hours per run"], rows), "")
    rep.figure(fig, "wall_time_per_env_step.png", "Wall time per environment step, mean ± std over seeds")
    rep.summary["wall_time_ms_per_step"] = {lab: m for lab, m in zip(labels, means)}

    rep.add("### Benchmark of the update step (benchmark_runtime.py)", "")
    if not benchmark_files:
        rep.add("No benchmark output found (run `python benchmark_runtime.py`, which writes "
                "results/benchmark_<device>.json).", "")
        return
    for path in benchmark_files:
        data = read_json(path)
        rows, meta = data.get("rows"), data.get("meta", {})
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            fail(f"{path} has no list of rows; it was not written by benchmark_runtime.py")
        rep.add(f"`{path.name}`: {meta.get('machine', '')} — command `{meta.get('command', '')}`", "")
        cols = [("variant", "variant", "{}"), ("batch_size", "B", "{}"), ("median_ms", "median ms", "{:.2f}"),
                ("p25_ms", "p25", "{:.2f}"), ("p75_ms", "p75", "{:.2f}"), ("updates_per_s", "updates/s", "{:.3g}"),
                ("cpu_median_ms", "CPU ms", "{:.0f}"), ("aug_ms", "aug ms", "{:.2f}"),
                ("forward_passes", "fwd", "{:g}"),
                ("forward_passes_unbatched", "fwd x copies", "{:g}"), ("backward_passes", "bwd", "{:g}"),
                ("encoder_fwd_samples", "encoder samples", "{:g}"), ("gflops", "GFLOP", "{:.1f}"),
                ("expected_cost_ratio", "expected (FLOPs)", "{:.2f}"),
                ("measured_cost_ratio", "measured (time)", "{:.2f}"),
                ("measured_cpu_ratio", "measured (CPU time)", "{:.2f}"),
                ("buffer_bytes_per_transition", "buffer B/transition", "{:.0f}"),
                ("peak_memory_mb", "peak extra MB", "{:.0f}"), ("status", "status", "{}")]
        table = []
        for r in rows:
            cells = []
            for key, _, spec in cols:
                v = r.get(key)
                try:
                    cells.append("—" if v is None else spec.format(v))
                except (TypeError, ValueError):
                    cells.append(str(v))
            table.append(cells)
        rep.add(md_table([h for _, h, _ in cols], table), "",
                "Per update: forward passes = calls of an encoder, MLP or Q network (`fwd x copies` counts each "
                "augmented copy as its own pass); backward = loss.backward calls; encoder samples = images "
                "through a conv stack. Expected and measured cost are relative to the baseline without "
                "augmentation (sac_pixels on DMC, nddqn_atari on Atari); measured above expected is overhead.", "")
        png = path.with_suffix(".png")
        if png.exists():
            shutil.copy(png, rep.out_dir / "figures" / png.name)
            rep.figures.append(f"figures/{png.name}")
            rep.add(f"![benchmark]({'figures/' + png.name})", "", f"*Update time per variant ({path.stem})*", "")


def main(args: Args) -> Path:
    if args.bootstrap_reps < 1:
        fail("--bootstrap-reps must be at least 1")
    runs, unfinished = load_runs(Path(args.runs_dir))
    groups = group_runs(runs)
    if args.benchmark is None:
        benchmark_files = sorted(p for p in (PROJECT_DIR / "results").glob("benchmark_*.json")
                                 if not p.stem.endswith("_quick"))  # --quick smoke checks are no measurement
    else:
        benchmark_files = [Path(p) for p in args.benchmark]
        for p in benchmark_files:
            if not p.exists():
                fail(f"benchmark file {p} does not exist")
    out_dir = Path(args.out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir / "figures", ignore_errors=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    rep = Report(args, out_dir)
    rep.add("# DrQ reproduction report", "",
            f"Generated by `python report.py --runs-dir {args.runs_dir} --out-dir {args.out_dir}` from "
            f"{len(runs)} finished runs. Published numbers: this project's reference/ folder.", "")
    section_runs(rep, runs, unfinished, groups)
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

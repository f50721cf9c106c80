"""report.py: HNS aggregates against the published numbers, bootstrap properties against exact enumeration, and
end-to-end reports on synthetic runs folders: every figure rendered without a warning, its curves, intervals,
legends and labels checked against the synthetic data."""

import csv
import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import report  # noqa: E402

with open(ROOT / "reference" / "atari_100k_scores.csv") as f:
    REF = list(csv.DictReader(f))
GAMES = [r["game"] for r in REF]


def published_hns(column: str) -> list[np.ndarray]:
    """One 'run' per game: the published per-game mean, human-normalised by hand (spec §3)."""
    return [np.array([(float(r[column]) - float(r["random"])) / (float(r["human"]) - float(r["random"]))])
            for r in REF]


# Published aggregates, spec §2.5 (the per-game columns of SPR's Table 1 / SPR-NB, 3 decimals) and §2.6 (median
# and mean of the rliable per-game means). Tolerances: 0.0005 is half a unit of the third decimal the papers print.
# The rliable per-game means in the csv are rounded to 0.1 points; that moves a game's HNS by at most
# 0.05 / (human - random), below 0.0003 for every game whose HNS is near the median (their human - random range is
# > 150 points), so the §2.6 rows get 0.0005 + 0.001 (one more unit of rounding slack).
PUBLISHED = [
    ("drq_reported_final", 0.284, 0.370, 0.0005),
    ("drq_reported_arxiv", 0.268, 0.357, 0.0005),
    ("der_reported", 0.161, 0.285, 0.0005),
    ("otrainbow_reported", 0.204, 0.264, 0.0005),
    ("spr_reported", 0.415, 0.70, 0.005),  # SPR's mean is printed with two decimals
    ("drq_100runs", 0.212, 0.369, 0.0015),
    ("drq_eps_100runs", 0.313, 0.465, 0.0015),
    ("der_100runs", 0.189, 0.350, 0.0015),
]


@pytest.mark.parametrize("column,median,mean,tol", PUBLISHED)
def test_published_aggregates(column, median, mean, tol):
    scores = published_hns(column)
    assert abs(report.point_estimate(report.aggregate_median, scores) - median) <= tol
    assert abs(report.point_estimate(report.aggregate_mean, scores) - mean) <= tol
    # With one run per game a stratified bootstrap has nothing to redraw: the CI is the point itself.
    p, lo, hi = report.interval_estimate(report.aggregate_median, scores, reps=200, seed=1)
    assert lo == pytest.approx(p) and hi == pytest.approx(p)


def test_iqm_and_optimality_gap_against_scipy():
    from scipy.stats import trim_mean

    rng = np.random.default_rng(0)
    scores = [rng.normal(0.3, 0.4, size=rng.integers(1, 7)) for _ in range(26)]  # ragged: 1..6 runs per game
    pooled = np.concatenate(scores)
    assert report.point_estimate(report.aggregate_iqm, scores) == pytest.approx(trim_mean(pooled, 0.25))
    assert report.point_estimate(report.aggregate_optimality_gap, scores) == pytest.approx(
        np.mean([1 - min(x, 1.0) for x in pooled]))
    # The IQM of the published DrQ column by hand: 26 games, drop the 6 lowest and 6 highest HNS.
    hns = np.sort(np.concatenate(published_hns("drq_reported_final")))
    assert report.point_estimate(report.aggregate_iqm, published_hns("drq_reported_final")) == pytest.approx(
        hns[6:20].mean())


def test_bootstrap_ci_matches_exact_enumeration():
    # Two games with three runs each: a stratified resample is one of 27 x 27 equally likely draws, so the exact
    # bootstrap distribution of the mean-over-games can be enumerated. The percentile CI from 20,000 resamples must
    # sit where the exact CDF crosses 2.5% / 97.5%; the Monte Carlo error of a CDF value is
    # sqrt(0.025 * 0.975 / 20000) ~ 0.0011, so a 0.006 slack is over 5 standard errors.
    games = [np.array([0.1, 0.4, 1.3]), np.array([2.0, 2.2, 5.0])]
    exact = []
    for a in itertools.product(games[0], repeat=3):
        for b in itertools.product(games[1], repeat=3):
            exact.append((np.mean(a) + np.mean(b)) / 2)
    exact = np.sort(exact)
    p, lo, hi = report.interval_estimate(report.aggregate_mean, games, reps=20000, seed=3)
    assert p == pytest.approx((games[0].mean() + games[1].mean()) / 2)
    for bound, q in ((lo, 0.025), (hi, 0.975)):
        below, at_or_below = np.mean(exact < bound - 1e-12), np.mean(exact <= bound + 1e-12)
        assert below <= q + 0.006 and at_or_below >= q - 0.006


def test_bootstrap_ci_contains_point_shrinks_and_is_seeded():
    rng = np.random.default_rng(1)
    few = [rng.gamma(2.0, 0.2, size=3) for _ in range(26)]
    many = [rng.gamma(2.0, 0.2, size=30) for _ in range(26)]
    for fn in report.AGGREGATES.values():
        p, lo, hi = report.interval_estimate(fn, few, reps=2000, seed=0)
        assert lo <= p <= hi and hi > lo
        _, lo2, hi2 = report.interval_estimate(fn, many, reps=2000, seed=0)
        assert hi2 - lo2 < 0.6 * (hi - lo)  # 10x the runs: about 1/sqrt(10) the width
    a = report.stratified_bootstrap(report.aggregate_iqm, few, reps=500, seed=7)
    b = report.stratified_bootstrap(report.aggregate_iqm, few, reps=500, seed=7)
    c = report.stratified_bootstrap(report.aggregate_iqm, few, reps=500, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_probability_of_improvement_brute_force():
    rng = np.random.default_rng(2)
    xs = [rng.integers(0, 5, size=rng.integers(2, 6)).astype(float) for _ in range(5)]  # integers: ties happen
    ys = [rng.integers(0, 5, size=rng.integers(2, 6)).astype(float) for _ in range(5)]
    by_hand = np.mean([np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y])
                       for x, y in zip(xs, ys)])
    p = report.point_estimate(report.probability_of_improvement, xs, ys)
    assert p == pytest.approx(by_hand)
    assert p + report.point_estimate(report.probability_of_improvement, ys, xs) == pytest.approx(1.0)
    p2, lo, hi = report.interval_estimate(report.probability_of_improvement, xs, ys, reps=1000, seed=0)
    assert p2 == pytest.approx(p) and lo <= p <= hi


# ----------------------------------------------------------------------------------------------------------------
# End to end on a synthetic runs folder
# ----------------------------------------------------------------------------------------------------------------

def write_run(runs: Path, algo: str, env_id: str, seed: int, final: dict | None, flags: dict | None = None,
              metrics: list[dict] | None = None, version: str = "abc1234", stamp: int = 1700000000) -> Path:
    """A run folder as the training scripts write it; final=None leaves it unfinished (no final.json)."""
    name = f"{env_id}__{algo}__{seed}__{stamp}"
    d = runs / name
    d.mkdir(parents=True)
    args = {"exp_name": algo, "seed": seed, "env_id": env_id, "cuda": True, "track": False, "runs_dir": str(runs),
            "batch_size": 32, **(flags or {}), "algo": algo, "run_name": name, "code_version": version}
    (d / "args.json").write_text(json.dumps(args))
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in (metrics or [])))
    if final is not None:
        (d / "final.json").write_text(json.dumps({"env_id": env_id, "algo": algo, "seed": seed, "eval_episodes": 10,
                                                  "std_return": 1.0, "returns": [], "run_name": name,
                                                  "code_version": version, **final}))
    return d


def render(runs: Path, out: Path, **kw) -> tuple[str, dict, dict]:
    """report.main with every warning an error; returns report.md, summary.json and the figures by file name."""
    figures = {}
    save = report.save

    def keep(fig, out_dir, name):
        figures[name] = fig
        return save(fig, out_dir, name)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.setattr(report, "save", keep)
        path = report.main(report.Args(runs_dir=str(runs), out_dir=str(out), **kw))
    return path.read_text(), json.loads((out / "summary.json").read_text()), figures


DRQ = "drq_dqn [epsilon_train=0.1]"  # label of the default DrQ group next to the DrQ(eps) one


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    atari = {}
    for algo in ("nddqn_atari", "drq_dqn"):
        for game in GAMES:
            if algo == "drq_dqn" and game == "Pong":
                continue  # the missing game
            for seed in range(2):
                score = float(rng.uniform(0, 1000))
                atari.setdefault((algo, game), []).append(score)
                write_run(runs, algo, f"{game}NoFrameskip-v4", seed,
                          {"mean_return": score, "total_timesteps": 100000, "wall_time_s": 3600.0 + seed},
                          flags={"epsilon_train": 0.1})
    # A DrQ(eps) configuration on two games: a different flag, so it must be its own group.
    for game in ("Breakout", "Alien"):
        for seed in range(2):
            write_run(runs, "drq_dqn", f"{game}NoFrameskip-v4", seed, {"mean_return": 99999.0,
                      "total_timesteps": 100000, "wall_time_s": 4000.0}, flags={"epsilon_train": 0.01}, stamp=1)
    dmc = [("sac_state", None), ("sac_pixels", None), ("drq_sac", (2, 2)), ("drq_sac", (1, 1)), ("sac_ae", None)]
    for i, (algo, km) in enumerate(dmc):
        for seed in range(3):
            metrics = [{"global_step": s, "time": 0.0, "eval/episodic_return": 100 + s / 200 + 10 * seed}
                       for s in range(0, 104_000, 8000)]
            metrics += [{"global_step": s, "time": 0.0, "invariance/q_mse_two_shifts": 1.0 / (1 + s),
                         "invariance/q_mse_shift_vs_none": 2.0 / (1 + s)} for s in range(1000, 104_000, 5000)]
            final = {"mean_return": 500.0 + seed, "total_timesteps": 104000, "wall_time_s": 1000.0, "action_repeat": 8}
            flags = {"action_repeat": 8}
            if km:
                final.update(k=km[0], m=km[1])
                flags.update(k=km[0], m=km[1])
            write_run(runs, algo, "cartpole-swingup", seed, final, flags=flags, metrics=metrics, stamp=i)
    (runs / "Breakout__drq_dqn__9__1").mkdir()  # unfinished: no final.json
    bench = tmp_path_factory.mktemp("bench") / "benchmark_cpu.json"
    bench.write_text(json.dumps({"meta": {"machine": "test CPU", "command": "python benchmark_runtime.py"}, "rows": [
        {"variant": "drq_sac_k2_m2", "status": "ok", "batch_size": 512, "median_ms": 123.456, "gflops": 516.8},
        {"variant": "sac_ae_joint", "status": "unavailable: sac_ae.py not found"}]}))
    out = tmp_path_factory.mktemp("report") / "rep"
    md, summary, _ = render(runs, out, bootstrap_reps=500, benchmark=[str(bench)])
    return runs, out, md, summary, atari


def test_report_has_every_game_algorithm_and_figure(synthetic):
    runs, out, md, summary, atari = synthetic
    for game in GAMES:
        assert f"| {game} |" in md
    for label in ("nddqn_atari", "drq_dqn [epsilon_train=0.1]", "drq_dqn [epsilon_train=0.01]", "sac_state",
                  "sac_pixels",
                  "drq_sac K=2,M=2", "drq_sac K=1,M=1", "sac_ae"):
        assert label in md
    figures = ["atari_aggregates.png", "atari_probability_of_improvement.png", "dmc_eval_cartpole-swingup.png",
               "invariance_cartpole-swingup.png", "wall_time_per_env_step.png", "benchmark_cpu.png"]
    for name in figures:
        assert (out / "figures" / name).stat().st_size > 5000
        assert f"](figures/{name})" in md
    assert "Breakout__drq_dqn__9__1" in md  # the folder without args.json or final.json is listed
    assert "| drq_sac_k2_m2 | 512 | 123.46 |" in md and "unavailable: sac_ae.py not found" in md


def test_header_command_redraws_the_same_report():
    # the header's command, parsed back by the report's own command line, gives the very flags that drew it
    import tyro

    args = report.Args(runs_dir="results/evidence", out_dir="out", bootstrap_reps=2000, merge_code_versions=True,
                       benchmark=["a.json", "b.csv"])
    line = report.command_line(args)
    assert line == ("python report.py --runs-dir results/evidence --out-dir out --bootstrap-reps 2000 "
                    "--benchmark a.json b.csv --merge-code-versions")
    assert tyro.cli(report.Args, args=line.split()[2:]) == args
    assert report.command_line(report.Args()) == "python report.py --runs-dir runs --out-dir report"


def test_report_lists_missing_game_and_does_not_mix_groups(synthetic):
    runs, out, md, summary, atari = synthetic
    groups = summary["atari"]["groups"]
    assert groups[DRQ]["missing_games"] == ["Pong"]
    assert groups["nddqn_atari"]["missing_games"] == []
    assert "missing games (1/26)" in md and "Pong" in md.split("missing games (1/26)")[1].splitlines()[0]
    eps = groups["drq_dqn [epsilon_train=0.01]"]
    assert sorted(eps["seeds_per_game"]) == ["Alien", "Breakout"] and len(eps["missing_games"]) == 24
    # The Breakout cell of drq_dqn is the mean of its own two seeds, not mixed with the 99999 of the eps group.
    table1 = md.split("### Table 1 layout")[1]
    breakout = next(line for line in table1.splitlines() if line.startswith("| Breakout |"))
    assert f"{np.mean(atari[('drq_dqn', 'Breakout')]):.1f} (2 seeds)" in breakout


def test_report_aggregates_match_independent_computation(synthetic):
    runs, out, md, summary, atari = synthetic
    ref = {r["game"]: r for r in REF}
    for algo, label in (("nddqn_atari", "nddqn_atari"), ("drq_dqn", DRQ)):
        per_game = {g: np.mean([(s - float(ref[g]["random"])) / (float(ref[g]["human"]) - float(ref[g]["random"]))
                                for s in atari[(algo, g)]]) for g in GAMES if (algo, g) in atari}
        got = summary["atari"]["groups"][label]
        assert got["median"]["point"] == pytest.approx(np.median(list(per_game.values())))
        assert got["mean"]["point"] == pytest.approx(np.mean(list(per_game.values())))
        assert got["median"]["ci95"][0] <= got["median"]["point"] <= got["median"]["ci95"][1]
    poi = summary["atari"]["probability_of_improvement"][f"{DRQ} > nddqn_atari"]
    assert poi["games"] == 25 and 0 <= poi["ci95"][0] <= poi["point"] <= poi["ci95"][1] <= 1
    # DMC: five groups on cartpole, 100k value = last eval at or before 100k (96k), mean over seeds 0, 1, 2.
    cart = summary["dmc"]["cartpole-swingup"]
    assert len(cart) == 5
    assert cart["drq_sac K=2,M=2"]["at_100k"] == pytest.approx(100 + 96000 / 200 + 10)
    assert cart["sac_ae"]["at_500k"] is None


def test_report_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "report.py"), "--runs-dir", str(empty), "--out-dir",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: no runs") and len(proc.stderr.strip().splitlines()) == 1

    def error_of(runs_dir):
        with pytest.raises(SystemExit) as e:
            report.main(report.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "o"), benchmark=[]))
        msg = str(e.value)
        assert msg.startswith("error: ") and "\n" not in msg
        return msg

    assert "does not exist" in error_of(tmp_path / "nope")
    bad = write_run(tmp_path / "bad", "drq_dqn", "PongNoFrameskip-v4", 0,
                    {"mean_return": 1.0, "total_timesteps": 1, "wall_time_s": 1.0})
    (bad / "final.json").write_text('{"env_id": "Pong')
    assert "final.json is not valid JSON" in error_of(tmp_path / "bad")
    (bad / "final.json").write_text('{"env_id": "PongNoFrameskip-v4"}')
    assert "lacks algo" in error_of(tmp_path / "bad")
    d = write_run(tmp_path / "badm", "drq_sac", "cartpole-swingup", 0,
                  {"mean_return": 1.0, "total_timesteps": 1, "wall_time_s": 1.0}, metrics=[{"global_step": 0}])
    (d / "metrics.jsonl").write_text('{"global_step": 0}\n{"global_st\n')
    assert "metrics.jsonl line 2 is not valid JSON" in error_of(tmp_path / "badm")


# ----------------------------------------------------------------------------------------------------------------
# Figures a reader trusts: a small evidence-like folder (one-point runs, multi-seed runs, incomplete runs, recipes,
# two spellings of a task, a benchmark CSV with columns report.py does not know)
# ----------------------------------------------------------------------------------------------------------------

EVAL_STEPS = list(range(0, 100_001, 10_000))
INCOMPLETE_DMC_STEP = 43_000  # the unfinished DrQ K=1,M=1 seed's last complete metrics line
INCOMPLETE_ATARI_STEP = 63_000


def dmc_metrics(rng, steps, level: float, mse: float) -> list[dict]:
    rows = []
    for s in steps:
        rows.append({"global_step": s, "time": 0.0, "eval/episodic_return": float(level * s / 1e5 + rng.uniform(0, 60)),
                     "invariance/q_mse_two_shifts": float(mse * rng.uniform(0.5, 1.5) / (1 + s / 2e4)),
                     "invariance/q_mse_shift_vs_none": float(2 * mse * rng.uniform(0.5, 1.5) / (1 + s / 2e4))})
        rows.append({"global_step": s, "time": 0.0, "losses/q": 5.0 + s / 1e4})
    return rows


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    runs = tmp_path_factory.mktemp("evidence")
    rng = np.random.default_rng(4)
    written = {}

    def dmc(algo, env_id, seed, steps, level, mse, km=None, finished=True, stamp=0, repeat=8):
        metrics = dmc_metrics(rng, steps, level, mse)
        flags = {"action_repeat": repeat, "batch_size": 128, **({"k": km[0], "m": km[1]} if km else {})}
        final = ({"mean_return": metrics[-2]["eval/episodic_return"], "total_timesteps": 100_000,
                  "wall_time_s": float(rng.uniform(3e4, 5e4)), **flags} if finished else None)
        d = write_run(runs, algo, env_id, seed, final, flags={**flags, "total_timesteps": 100_000},
                      metrics=metrics, stamp=stamp)
        written[(algo, km, env_id, seed)] = metrics
        return d

    for seed in (1, 2):  # multi-seed groups
        dmc("drq_sac", "cartpole-swingup", seed, EVAL_STEPS, 700, 1e-3, km=(2, 2), stamp=1)
        dmc("sac_pixels", "cartpole-swingup", seed, EVAL_STEPS, 200, 1e-1, stamp=2)
    dmc("drq_sac", "cartpole-swingup", 1, EVAL_STEPS, 500, 1e-3, km=(1, 1), stamp=3)  # one seed
    dmc("sac_state", "cartpole-swingup", 1, EVAL_STEPS, 800, 1e-3, stamp=4)
    # an unfinished seed: evaluations to 40k, a training line at 43k, then a half-written line (killed mid-write)
    d = dmc("drq_sac", "cartpole-swingup", 2, range(0, 40_001, 10_000), 500, 1e-3, km=(1, 1), finished=False,
            stamp=5)
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"global_step": INCOMPLETE_DMC_STEP, "charts/episodic_return": 300.0}) + "\n")
        f.write('{"global_step": 44000, "charts/SP')
    # one evaluation each, and the same task in the two spellings
    dmc("drq_sac", "walker_walk", 1, [100_000], 600, 1e-3, km=(2, 2), stamp=6, repeat=2)
    dmc("sac_pixels", "walker-walk", 1, [100_000], 100, 1e-1, stamp=7, repeat=2)

    atari = {("drq-eps", "Breakout"): 15.0, ("drq-eps", "Pong"): -18.0, ("efficient-dqn", "Breakout"): 8.0}
    algos = {"drq-eps": "drq_dqn", "efficient-dqn": "nddqn_atari"}
    for (recipe, game), score in atari.items():
        write_run(runs, algos[recipe], f"{game}NoFrameskip-v4", 1,
                  {"mean_return": score, "total_timesteps": 100_000, "wall_time_s": 3600.0},
                  flags={"recipe": recipe, "eval_epsilon": 0.001 if recipe == "drq-eps" else 0.05,
                         "total_timesteps": 100_000}, stamp=8)
    write_run(runs, "nddqn_atari", "PongNoFrameskip-v4", 1, None,
              flags={"recipe": "efficient-dqn", "eval_epsilon": 0.05, "total_timesteps": 100_000}, stamp=8,
              metrics=[{"global_step": s, "time": 0.0, "charts/episodic_return": -21.0}
                       for s in range(2000, INCOMPLETE_ATARI_STEP + 1, 1000)])

    bench = tmp_path_factory.mktemp("bench") / "benchmark_cpu.csv"
    bench.write_text(
        "variant,batch_size,median_ms,p25_ms,p75_ms,aug_ms,gflop,gflops_per_s,user_s,sys_s,page_faults,peak_rss_mb,"
        "domain,status,threads,expected_cost_ratio,measured_cost_ratio\n"
        "sac_pixels,128,2000,1900,2100,,73.5,36.7,8.1,0.4,1200,2900,dmc,ok,1,1.0,1.0\n"
        "drq_sac_k2_m2,128,3800,,,95.2,133.1,35.0,15.2,0.6,1800,3400,dmc,ok,1,1.81,1.9\n"
        "nddqn_atari,32,40,39,41,,2.18,54.5,0.9,0.05,300,1100,atari,ok,1,1.0,1.0\n"
        "sac_ae_joint,,,,,,,,,,,,dmc,unavailable: test,,,\n")
    out = tmp_path_factory.mktemp("evidence_report")
    md, summary, figures = render(runs, out, bootstrap_reps=200, benchmark=[str(bench)])
    return out, md, summary, figures, written, atari


EVIDENCE_FIGURES = ("dmc_eval_cartpole-swingup.png", "dmc_eval_walker-walk.png", "invariance_cartpole-swingup.png",
                    "invariance_walker-walk.png", "atari_aggregates.png", "atari_probability_of_improvement.png",
                    "wall_time_per_env_step.png", "benchmark_cpu.png")


def legend_entries(fig) -> list[tuple[str, object, object]]:
    """(label, legend handle, the artist it stands for) of every figure-level legend entry."""
    originals = {}
    for ax in fig.axes:
        for artist, label in zip(*ax.get_legend_handles_labels()):
            originals.setdefault(label, artist)
    assert fig.legends, "figure has no legend"
    return [(t.get_text(), h, originals[t.get_text()]) for leg in fig.legends
            for t, h in zip(leg.get_texts(), leg.legend_handles)]


def test_every_figure_is_written_titled_labelled_and_its_legend_matches(evidence):
    from matplotlib.colors import to_rgba
    from matplotlib.container import BarContainer
    from matplotlib.lines import Line2D

    out, md, summary, figures, *_ = evidence
    assert sorted(figures) == sorted(EVIDENCE_FIGURES)
    for name, fig in figures.items():
        png = out / "figures" / name
        assert png.stat().st_size > 5000 and f"](figures/{name})" in md
        rgb = (report.plt.imread(png)[..., :3] * 255).astype(np.uint32)
        colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
        assert len(colours) > 50  # not a flat or near-empty image
        assert fig.get_suptitle() or all(ax.get_title() for ax in fig.axes), name
        assert fig.axes[0].get_ylabel(), name
        for ax in fig.axes:
            assert ax.get_xlabel(), name
        for label, handle, artist in legend_entries(fig):
            assert "1 seeds" not in label
            if isinstance(artist, BarContainer):  # every bar has the colour of its legend patch
                assert {to_rgba(p.get_facecolor()) for p in artist.patches} == {to_rgba(handle.get_facecolor())}, \
                    (name, label)
            elif isinstance(artist, Line2D):
                assert to_rgba(artist.get_color()) == to_rgba(handle.get_color()), (name, label)
                assert artist.get_linestyle() == handle.get_linestyle()
    units = {"dmc_eval_cartpole-swingup.png": ("environment steps", "episode return"),
             "invariance_cartpole-swingup.png": ("environment steps", "squared Q difference"),
             "benchmark_cpu.png": ("ms per update", "variant"),
             "wall_time_per_env_step.png": ("(ms)", "run group"),
             "atari_aggregates.png": ("human-normalised score", "runs")}
    for name, (x, y) in units.items():
        assert x in figures[name].axes[0].get_xlabel() and y in figures[name].axes[0].get_ylabel()


def curve_line(fig, label_start: str, ax_index: int = 0):
    lines = [ln for ln in fig.axes[ax_index].get_lines() if ln.get_label().startswith(label_start)]
    assert len(lines) == 1, [ln.get_label() for ln in fig.axes[ax_index].get_lines()]
    return lines[0]


def test_multi_seed_curve_is_the_mean_with_a_t_interval(evidence):
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb
    from scipy import stats

    *_, figures, written, _ = evidence
    seeds = [[m["eval/episodic_return"] for m in written[("drq_sac", (2, 2), "cartpole-swingup", s)]
              if "eval/episodic_return" in m] for s in (1, 2)]
    values = np.array(seeds)
    mean = values.mean(0)
    lo, hi = stats.t.interval(0.95, 1, loc=mean, scale=stats.sem(values, axis=0))
    fig = figures["dmc_eval_cartpole-swingup.png"]
    line = curve_line(fig, "drq_sac K=2,M=2: 2 seeds, mean and 95% CI")
    assert np.allclose(line.get_xdata(), EVAL_STEPS) and np.allclose(line.get_ydata(), mean)
    band = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)
            and np.allclose(c.get_facecolor()[0][:3], to_rgb(line.get_color()))]
    assert len(band) == 1
    ys = band[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())
    for n in (2, 3, 7, 31, 80):  # the interval widens for few seeds as Student's t says
        assert report.t_quantile_975(n - 1) == pytest.approx(stats.t.ppf(0.975, n - 1), abs=1e-4)
    x = np.random.default_rng(0).normal(size=5)
    assert report.mean_ci95(x) == pytest.approx((x.mean(), *stats.t.interval(0.95, 4, x.mean(), stats.sem(x))))


def test_one_point_runs_are_drawn_with_a_marker(evidence):
    *_, figures, written, _ = evidence
    for name, key, ax_index in (("dmc_eval_walker-walk.png", "eval/episodic_return", 0),
                                ("invariance_walker-walk.png", "invariance/q_mse_two_shifts", 0),
                                ("invariance_walker-walk.png", "invariance/q_mse_shift_vs_none", 1)):
        for (algo, km, env), label in (((("drq_sac", (2, 2), "walker_walk")), "drq_sac K=2,M=2: 1 seed"),
                                       ((("sac_pixels", None, "walker-walk")), "sac_pixels: 1 seed")):
            line = curve_line(figures[name], label, ax_index)
            logged = [m[key] for m in written[(algo, km, env, 1)] if key in m]
            assert list(line.get_ydata()) == pytest.approx(logged) and len(logged) == 1
            assert line.get_marker() not in (None, "", "None", " ")
    walker = figures["dmc_eval_walker-walk.png"].axes[0]
    assert walker.get_xlim()[0] <= 0 and walker.get_xlim()[1] >= 100_000  # the point is inside the axes


def test_incomplete_runs_are_drawn_dashed_and_never_counted(evidence):
    out, md, summary, figures, written, atari = evidence
    note = f"incomplete, up to step {INCOMPLETE_DMC_STEP:,}"
    line = curve_line(figures["dmc_eval_cartpole-swingup.png"], "drq_sac K=1,M=1, seed 2")
    assert note in line.get_label() and line.get_linestyle() == "--"
    assert line.get_xdata().max() == 40_000  # its last evaluation; the half-written line was skipped
    # tables: only the finished seed 1 of DrQ K=1,M=1
    k1 = summary["dmc"]["cartpole-swingup"]["drq_sac K=1,M=1"]
    seed1 = [m["eval/episodic_return"] for m in written[("drq_sac", (1, 1), "cartpole-swingup", 1)]
             if "eval/episodic_return" in m]
    assert k1["seeds"] == 1 and k1["final_mean"] == pytest.approx(seed1[-1])
    row = next(line for line in md.splitlines() if line.startswith("| cartpole-swingup | drq_sac K=1,M=1 |"))
    assert row.split(" | ")[2] == "1" and f"seed 2 {note}" in row
    assert summary["incomplete_runs"]["PongNoFrameskip-v4__nddqn_atari__1__8"]["last_step"] == INCOMPLETE_ATARI_STEP
    # Atari: the unfinished Pong run of efficient-dqn is named, not scored, and not in its aggregates
    table1 = md.split("### Table 1 layout")[1]
    pong = next(line for line in table1.splitlines() if line.startswith("| Pong |"))
    assert f"incomplete, up to step {INCOMPLETE_ATARI_STEP:,}" in pong
    eff = summary["atari"]["groups"]["efficient-dqn"]
    assert eff["scores"] == {"Breakout": [8.0]} and "Pong" in eff["missing_games"]
    ref = {r["game"]: r for r in REF}["Breakout"]
    hns = (8.0 - float(ref["random"])) / (float(ref["human"]) - float(ref["random"]))
    assert eff["median"]["point"] == pytest.approx(hns) and eff["iqm"]["point"] == pytest.approx(hns)


def test_seed_counts_are_pluralised(evidence):
    out, md, summary, figures, *_ = evidence
    labels = [label for fig in figures.values() for label, _, _ in legend_entries(fig)]
    assert "sac_state: 1 seed" in labels and "sac_pixels: 2 seeds, mean and 95% CI" in labels
    ticks = [t.get_text() for fig in figures.values() for ax in fig.axes for t in ax.get_yticklabels()]
    assert any("(1 seed)" in t for t in ticks) and any("(2 seeds)" in t for t in ticks)
    assert "1 seeds" not in md and not any("1 seeds" in t for t in labels + ticks)
    assert [report.plural(n, "seed") for n in (0, 1, 2)] == ["0 seeds", "1 seed", "2 seeds"]


def test_task_names_have_one_spelling(evidence):
    out, md, summary, figures, written, _ = evidence
    for spelling in ("cartpole-swingup", "cartpole_swingup", "dmc/cartpole-swingup-v0", "cartpole_swingup-v0"):
        assert report.dmc_task(spelling) == "cartpole-swingup"
    assert report.dmc_task("ball_in_cup_catch") == report.dmc_task("ball_in_cup-catch") == "ball_in_cup-catch"
    assert report.dmc_task("humanoid_CMU_run") == "humanoid_CMU-run"
    ref_tasks = {r["task"] for r in report.read_dmc_reference()}
    assert "cartpole-swingup" in ref_tasks and all(report.dmc_task(t) == t for t in ref_tasks)
    assert sorted(summary["dmc"]) == ["cartpole-swingup", "walker-walk"]  # walker_walk and walker-walk: one task
    assert "cartpole_swingup" not in md and "walker_walk" not in md.replace("walker_walk__", "")
    # the published 100k marks, read through the normalised names, sit where reference/dmc_scores.csv puts them
    with open(ROOT / "reference" / "dmc_scores.csv") as f:
        published = {r["method"]: float(r["mean"]) for r in csv.DictReader(f)
                     if r["task"] == "cartpole_swingup" and r["env_steps"] == "100000"}
    ax = figures["dmc_eval_cartpole-swingup.png"].axes[0]
    for method in ("DrQ K=2,M=2", "DrQ K=1,M=1", "SAC (pixels)", "SAC-AE", "SAC State"):
        mark = [c for c in ax.containers if c.get_label().startswith(f"published {method} (")]
        assert len(mark) == 1 and list(mark[0].lines[0].get_ydata()) == [published[method]]
        assert f"100k: {published[method]:.0f} ±" in mark[0].get_label()
    assert ax.get_ylim()[0] <= 0 and ax.get_ylim()[1] >= 1000  # fixed: DMC returns lie in [0, 1000]


def test_atari_table_uses_recipes_and_published_hns(evidence):
    out, md, summary, figures, written, atari = evidence
    ref = {r["game"]: r for r in REF}
    ours = md.split("### Our games")[1].split("###")[0]
    for (recipe, game), score in atari.items():
        r = ref[game]
        row = next(line for line in ours.splitlines() if line.startswith(f"| {game} | {recipe} |"))
        hns = (score - float(r["random"])) / (float(r["human"]) - float(r["random"]))
        published = float(r["drq_eps_100runs"])
        p_hns = (published - float(r["random"])) / (float(r["human"]) - float(r["random"]))
        assert f"| 1 seed | {score:.1f} | {hns:.3f} |" in row
        assert f"{published:.1f} (HNS {p_hns:.3f})" in row
    assert "| Pong | efficient-dqn | 0 |" in ours  # its only Pong run is incomplete
    # the aggregate axes: one fixed range for all panels, from at most 0 to at least max(1, upper CI)
    axes = figures["atari_aggregates.png"].axes
    uppers = [summary["atari"]["groups"][g][k]["ci95"][1] for g in ("drq-eps", "efficient-dqn")
              for k in ("median", "mean", "iqm")]
    assert len({ax.get_xlim() for ax in axes}) == 1
    assert axes[2].get_xlim()[0] <= 0 and axes[2].get_xlim()[1] >= max(1.0, *uppers)
    assert "P(drq-eps > efficient-dqn), 1 game, 1 seed each" in [label for label, _, _ in
                                                    legend_entries(figures["atari_probability_of_improvement.png"])]


def test_benchmark_table_renders_the_columns_it_finds(evidence):
    out, md, *_ = evidence
    section = md.split("### Update cost")[1]
    for header in ("GFLOP per update", "GFLOP/s", "user CPU s", "system CPU s", "page faults", "peak RSS MB",
                   "threads", "p25 ms", "augmentation ms"):
        assert f" {header} |" in section, header
    assert "| drq_sac_k2_m2 | 128 | 3800.00 | — | — |" in section  # its p25/p75 are missing: shown as —
    assert "| 133.1 | 35.0 |" in section and "| 3400 | 1800 |" in section
    assert "CPU ms" not in section  # no row has it, so no empty column
    assert "unavailable: test" in section


def test_merge_code_versions_from_the_command_line(tmp_path):
    runs = tmp_path / "runs"
    for seed, version in ((1, "aaa1111"), (2, "bbb2222")):
        write_run(runs, "sac_state", "cartpole-swingup", seed, {"mean_return": 100.0 * seed, "total_timesteps": 1000,
                  "wall_time_s": 10.0, "action_repeat": 8}, flags={"action_repeat": 8}, version=version,
                  metrics=[{"global_step": 1000, "eval/episodic_return": 100.0 * seed}])
    for extra, groups in (([], 2), (["--merge-code-versions"], 1)):
        proc = subprocess.run([sys.executable, "-W", "error", str(ROOT / "report.py"), "--runs-dir", str(runs),
                               "--out-dir", str(tmp_path / "o"), "--benchmark", *extra], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((tmp_path / "o" / "summary.json").read_text())
        assert len(summary["groups"]) == groups
    assert summary["dmc"]["cartpole-swingup"]["sac_state"]["final_mean"] == pytest.approx(150.0)


@pytest.mark.parametrize("newer_channels_last,groups", [("default", 1), ("other", 2)])
def test_flag_missing_from_an_older_run_counts_at_the_scripts_default(tmp_path, newer_channels_last, groups):
    """Seed 1 was written before drq_sac.py had --channels-last and --compile: it runs as their defaults, so it
    merges with a seed that ran them at the defaults, and stays apart from one that changed channels_last."""
    import drq_sac

    default = drq_sac.Args.channels_last
    runs = tmp_path / "runs"
    km = {"action_repeat": 8, "k": 1, "m": 1}
    result = {"total_timesteps": 1000, "wall_time_s": 10.0, **km}
    write_run(runs, "drq_sac", "cartpole-swingup", 1, {"mean_return": 100.0, **result}, flags=km, version="old1111")
    newer = {**km, "channels_last": default if newer_channels_last == "default" else not default,
             "compile": drq_sac.Args.compile}
    write_run(runs, "drq_sac", "cartpole-swingup", 2, {"mean_return": 200.0, **result}, flags=newer,
              version="new2222")
    merged = report.group_runs(report.load_runs(runs)[0], merge_code_versions=True)
    assert sorted(len(g.runs) for g in merged) == sorted([2] if groups == 1 else [1, 1])
    assert all(g.flags["channels_last"] in (True, False) for g in merged)  # filled in, not None
    assert len(report.group_runs(report.load_runs(runs)[0])) == 2  # different code versions stay apart by default


def test_published_aggregates_cover_the_same_games_as_ours(evidence):
    """Our aggregates cover the games our runs finished; the published ones beside them must cover the same games,
    else a figure sets a few games of ours against 26 of theirs."""
    out, md, summary, figures, written, atari = evidence
    ours = {game for _, game in atari}
    ref = {r["game"]: r for r in REF}
    for column in ("drq_eps_100runs", "der_reported"):
        hns = [(float(ref[g][column]) - float(ref[g]["random"])) / (float(ref[g]["human"]) - float(ref[g]["random"]))
               for g in sorted(ours)]
        assert summary["atari"]["published"][column]["median"] == pytest.approx(float(np.median(hns)))
        assert summary["atari"]["published"][column]["mean"] == pytest.approx(float(np.mean(hns)))
    assert summary["atari"]["published_games"] == len(ours) < 26
    assert f"({len(ours)} games)" in " ".join(t.get_text() for ax in figures["atari_aggregates.png"].axes
                                              for t in ax.get_yticklabels())

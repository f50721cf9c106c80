"""sweep.py: grid expansion, checking every run's flags before anything starts, a local Ray sweep, retries, resume
from checkpoints and after an interruption, a two-node Ray cluster and a real training script. Fake training scripts
(written here, following the output contract of CONTRIBUTING.md and with a parse_args(argv) as the real ones) log
every start to `<sweep-dir>/starts.log`, so each test can count exactly which runs were executed and how often."""
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

import pytest

import sweep

ROOT = Path(__file__).resolve().parents[1]

# Modes: ok finishes; fail always exits 3; flaky fails its first attempt; ckpt writes checkpoint.pt and is preempted
# (exit 143) on a fresh start, and with --resume RUN_DIR finishes that run in place, deleting the checkpoint, as the
# training scripts do. Only ckpt's parser takes --resume.
FAKE = '''import argparse, json, os, sys, time
from pathlib import Path
MODE = "{mode}"


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--env-id", required=True)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--track", action="store_true")
    p.add_argument("--wandb-group")
    p.add_argument("--wandb-mode")
    if MODE == "ckpt":
        p.add_argument("--resume")
    return p.parse_args(argv)


def main(a):
    runs = Path(a.runs_dir)
    with open(runs.parent / "starts.log", "a") as f:
        f.write(runs.name + "\\n")
    attempt = [l.strip() for l in open(runs.parent / "starts.log")].count(runs.name)
    print(f"fake {{MODE}} {{a.env_id}} seed {{a.seed}} attempt {{attempt}}", flush=True)
    time.sleep(a.sleep)
    if MODE == "fail" or (MODE == "flaky" and attempt == 1):
        print(f"boom-{{a.env_id}}-{{a.seed}}-attempt{{attempt}}", flush=True)
        sys.exit(3)
    resumed_at = None
    if MODE == "ckpt" and a.resume:
        run = Path(a.resume)
        resumed_at = json.loads((run / "checkpoint.pt").read_text())["step"]
    else:
        run = runs / f"{{a.env_id}}__{{MODE}}__{{a.seed}}__{{time.time_ns()}}"
        run.mkdir(parents=True, exist_ok=True)
    if MODE == "ckpt" and resumed_at is None:
        (run / "checkpoint.pt").write_text(json.dumps({{"step": 50}}))
        print("SIGTERM at step 50", flush=True)
        sys.exit(143)
    final = {{"env_id": a.env_id, "algo": MODE, "seed": a.seed, "mean_return": 10.0 * a.seed + len(a.env_id),
              "argv": sys.argv[1:], "omp": os.environ.get("OMP_NUM_THREADS"),
              "mkl": os.environ.get("MKL_NUM_THREADS"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "resumed_at": resumed_at}}
    (run / "final.json.tmp").write_text(json.dumps(final))
    os.replace(run / "final.json.tmp", run / "final.json")
    (run / "checkpoint.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    main(parse_args())
'''


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake_scripts")
    for mode in ("ok", "fail", "flaky", "ckpt"):
        (d / f"{mode}.py").write_text(FAKE.format(mode=mode))
    return d


def sweep_cmd(*args):
    return [sys.executable, str(ROOT / "sweep.py"), *args]


def run_sweep(*args, env=None, timeout=240):
    return subprocess.run(sweep_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def starts(sweep_dir: Path) -> Counter:
    log = sweep_dir / "starts.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def finished(sweep_dir: Path) -> dict[str, dict]:
    """run id -> final.json of every finished run, read straight from disk (not from sweep.py's bookkeeping)."""
    return {p.parent.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*__*/*/final.json")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------- grid


def test_presets_and_grid_expansion(scripts, capsys):
    with open(ROOT / "reference" / "atari_100k_scores.csv") as f:
        games = [row["game"] for row in csv.DictReader(f)]
    p = sweep.presets()
    counts = {name: len(sweep.expand_grid(q.variants, q.envs, q.seeds)) for name, q in p.items()}
    assert counts == {"atari100k": len(games) * 5 * 3, "dmc-planet": 6 * 10 * 4, "report-ablation": 4 * 10}
    assert counts["atari100k"] == 390 and len(games) == 26

    atari = sweep.expand_grid(p["atari100k"].variants, p["atari100k"].envs, p["atari100k"].seeds)
    assert len({r.run_id for r in atari}) == 390
    # the named recipes of the scripts (issue 13), not hand-written flag lists
    assert {(r.script, r.recipe, r.flags) for r in atari} == {
        ("nddqn_atari.py", "efficient-dqn", ()), ("drq_dqn.py", "drq", ()), ("drq_dqn.py", "drq-eps", ())}
    eps = next(r for r in atari if r.recipe == "drq-eps")
    assert eps.run_id.startswith("drq_dqn.drq-eps__")
    assert sweep.Launch(Path("/s"), ROOT).command(eps)[1:3] == [str(ROOT / "drq_dqn.py"), "drq-eps"]
    assert {r.env_id for r in atari} == set(games) and {r.seed for r in atari} == {1, 2, 3, 4, 5}
    ablation = sweep.expand_grid(p["report-ablation"].variants, p["report-ablation"].envs, p["report-ablation"].seeds)
    assert {(r.flags[1], r.flags[3]) for r in ablation} == {("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")}
    assert all(r.flags[4:] == ("--batch-size", "128") for r in ablation)  # the paper's ablation batch (spec §1.4)
    assert {r.env_id for r in ablation} == {"cartpole-swingup"}
    dmc = sweep.expand_grid(p["dmc-planet"].variants, p["dmc-planet"].envs, p["dmc-planet"].seeds)
    assert {r.script for r in dmc} == {"drq_sac.py", "sac_pixels.py", "sac_ae.py", "sac_state.py"}
    assert all((ROOT / r.script).is_file() for q in p.values() for r in q.variants)

    # ETA: runs of mean length 150 s; two running for 50 s and 200 s, two queued, two slots: (100 + 0 + 300) / 2
    bar = sweep.ProgressBar(10)
    assert bar.eta([50.0, 200.0], 2, 2) is None  # nothing finished yet: unknown
    bar.durations += [100.0, 200.0]
    assert bar.eta([50.0, 200.0], 2, 2) == pytest.approx(200.0) and bar.eta([], 0, 2) == 0.0

    assert sweep.parse_seeds(["1-3,7", "9", "2"]) == (1, 2, 3, 7, 9)
    for bad in (["3-1"], ["x"], [""]):
        with pytest.raises(SystemExit, match="error:"):
            sweep.parse_seeds(bad)

    # Ad-hoc form with pass-through flags: 2 scripts x 2 envs x 3 seeds, flags reach every command; the wandb
    # routing flags reach it too but do not change the run ids (resuming with --track must not restart runs).
    grid = ["--script-dir", str(scripts), "--scripts", "ok.py", "flaky.py", "--envs", "X", "ALE/Pong-v5",
            "--seeds", "1-3", "--sweep-dir", "/nonexistent/s"]
    sweep.main([*grid, "--dry-run", "--", "--sleep", "0.01", "--track", "--wandb-group", "G"])
    tracked = capsys.readouterr().out.strip().splitlines()
    assert tracked[-1].startswith("12 runs: 0 done, 12 to run")
    assert all(line.endswith("--sleep 0.01 --wandb-group G --track") for line in tracked[:-1])
    sweep.main([*grid, "--dry-run", "--", "--sleep", "0.01"])
    plain = capsys.readouterr().out.strip().splitlines()
    ids = [line.split()[1] for line in plain[:-1]]
    assert ids == [line.split()[1] for line in tracked[:-1]] and len(set(ids)) == 12
    assert "flaky__ALE-Pong-v5__3__" in " ".join(ids) and "--track" not in " ".join(plain)
    assert sweep.main(["--preset", "atari100k", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("390 runs:")

    for argv, msg in ((["--scripts", "a.py", "--envs", "X", "--", "--seed", "3"], "--seed is set by sweep.py"),
                      (["--scripts", "a.py", "--envs", "X", "--", "--resume", "r"], "--resume is set by sweep.py"),
                      (["--preset", "atari100k", "--", "drq-eps"], "recipe after `--`"),
                      (["--preset", "nope"], "unknown preset"), (["--envs", "X"], "give --preset"),
                      (["--scripts", "missing.py", "--envs", "X", "--sweep-dir", "/nonexistent/s"], "not found")):
        with pytest.raises(SystemExit, match=msg):
            sweep.main(argv)


# ------------------------------------------------------------------------ checks before anything starts


def _no_ray(*args):
    raise AssertionError("Ray was started")


def test_bad_cell_fails_the_sweep_before_ray_with_one_line(scripts, tmp_path, monkeypatch):
    d = tmp_path / "s"
    # A flag one script rejects: the first bad cell is named, with the parser's own first error line.
    out = run_sweep("--script-dir", str(scripts), "--scripts", "ok.py", "--envs", "A", "B", "--seeds", "1-2",
                    "--sweep-dir", str(d), "--", "--sleep", "abc")
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.splitlines() == [f"error: run ok__A__1__{sweep.flag_hash(('--sleep', 'abc'))} "
                                       "(ok.py --sleep abc): argument --sleep: invalid float value: 'abc'"]
    assert not d.exists()
    # The real scripts, their tyro parsers and recipes: of two scripts only one knows the recipe drq-eps.
    for dry in ((), ("--dry-run",)):
        out = run_sweep("--scripts", "drq_dqn.py", "nddqn_atari.py", "--envs", "Pong", "--sweep-dir", str(d), *dry,
                        "--", "drq-eps", "--batch-size", "16")
        assert out.returncode != 0 and out.stdout == "" and not d.exists()
        assert re.fullmatch(r"error: run nddqn_atari\.drq-eps__Pong__1__\w{8} \(nddqn_atari\.py drq-eps "
                            r"--batch-size 16\): Unrecognized options: drq-eps.*\n", out.stderr), out.stderr
    # in-process: nothing reaches Ray, nothing is written
    monkeypatch.setattr(sweep, "connect_ray", _no_ray)
    with pytest.raises(SystemExit, match=r"^error: run drq_dqn\.drq__Pong__1__\w{8} \(drq_dqn\.py drq "
                                         r"--total-timesteps 1e3\): Error parsing --total-timesteps: invalid literal"):
        sweep.main(["--preset", "atari100k", "--envs", "Pong", "--seeds", "1", "--sweep-dir", str(d),
                    "--scripts", "drq_dqn.py", "--", "--total-timesteps", "1e3"])
    assert not d.exists()
    # tyro wraps a long message over several lines of its box: the error still comes back as one line
    drq_dqn = sweep._import_script(ROOT / "drq_dqn.py")
    args, error = sweep._parse_with_script(drq_dqn, ["--env-id", "Pong", "drq-eps"])
    assert args is None and error.startswith("Cannot select subcommand 'drq-eps' because 'drq' was already") and \
        "\n" not in error


def test_missing_script_fails_with_one_line(scripts, tmp_path):
    d = tmp_path / "s"
    for dry in ((), ("--dry-run",)):
        out = run_sweep("--script-dir", str(scripts), "--scripts", "ok.py", "nope.py", "--envs", "A",
                        "--sweep-dir", str(d), *dry)
        assert out.returncode != 0 and out.stdout == "" and not d.exists()
        assert out.stderr.splitlines() == [f"error: script(s) not found in {scripts}: nope.py"]


def test_unfinished_cell_resumes_from_its_checkpoint_and_finished_cell_is_skipped(scripts, tmp_path, capsys):
    d = tmp_path / "s"
    h = sweep.flag_hash(())
    for run_id, folder, files in ((f"ckpt__A__1__{h}", "A__ckpt__1__1", ("checkpoint.pt",)),
                                  (f"ckpt__A__2__{h}", "A__ckpt__2__1", ("final.json",)),
                                  (f"ok__A__1__{h}", "A__ok__1__1", ("checkpoint.pt",))):  # ok.py takes no --resume
        for name in files:
            (d / run_id / folder).mkdir(parents=True)
            (d / run_id / folder / name).write_text("{}")
    assert sweep.main(["--script-dir", str(scripts), "--scripts", "ckpt.py", "ok.py", "--envs", "A",
                       "--seeds", "1-3", "--sweep-dir", str(d), "--dry-run"]) == 0
    lines = {run_id: f"{status} {cmd}" for status, run_id, cmd in
             (line.split(None, 2) for line in capsys.readouterr().out.splitlines()[:-1])}
    runs = f"--runs-dir {d}/"
    assert lines == {
        f"ckpt__A__1__{h}": f"resume python {scripts}/ckpt.py --seed 1 --env-id A {runs}ckpt__A__1__{h} "
                            f"--resume {d}/ckpt__A__1__{h}/A__ckpt__1__1",
        f"ckpt__A__2__{h}": f"done python {scripts}/ckpt.py --seed 2 --env-id A {runs}ckpt__A__2__{h}",
        f"ckpt__A__3__{h}": f"todo python {scripts}/ckpt.py --seed 3 --env-id A {runs}ckpt__A__3__{h}",
        f"ok__A__1__{h}": f"todo python {scripts}/ok.py --seed 1 --env-id A {runs}ok__A__1__{h}",
        f"ok__A__2__{h}": f"todo python {scripts}/ok.py --seed 2 --env-id A {runs}ok__A__2__{h}",
        f"ok__A__3__{h}": f"todo python {scripts}/ok.py --seed 3 --env-id A {runs}ok__A__3__{h}"}


class FakeRay(types.ModuleType):
    """Ray's API as _execute uses it, running each task at once in this process."""

    class Ref:
        def __init__(self, result):
            self.result = result

    def __init__(self):
        super().__init__("ray")
        self.shutdowns = 0

    def remote(self, fn):
        ref = self.Ref

        class Task:
            def options(self, **opts):
                return self

            def remote(self, *args):
                return ref(fn(*args))

        return Task()

    def cluster_resources(self):
        return {"CPU": 1.0}

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.result

    def shutdown(self):
        self.shutdowns += 1


@pytest.mark.parametrize("ray_started", [True, False])
def test_retry_resumes_and_ray_is_shut_down_only_if_sweep_started_it(scripts, tmp_path, monkeypatch, ray_started):
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(sweep, "connect_ray", lambda *args: (fake, ray_started))
    d = tmp_path / "s"
    assert sweep.main(["--script-dir", str(scripts), "--scripts", "ckpt.py", "--envs", "A", "--sweep-dir", str(d),
                       "--max-retries", "1"]) == 0
    assert fake.shutdowns == (1 if ray_started else 0)
    run_id = f"ckpt__A__1__{sweep.flag_hash(())}"
    assert starts(d) == Counter({run_id: 2})
    (folder,) = (d / run_id).glob("A__ckpt__*")  # the retry continued the preempted run in place
    final = json.loads((folder / "final.json").read_text())
    assert final["resumed_at"] == 50 and final["argv"][-2:] == ["--resume", str(folder)]
    assert not (folder / "checkpoint.pt").exists()
    attempts = re.findall(r"^=== attempt (\d) .*", (d / run_id / "log.txt").read_text(), re.M)
    assert attempts == ["1", "2"]
    commands = re.findall(r"^=== attempt \d .*$", (d / run_id / "log.txt").read_text(), re.M)
    assert "--resume" not in commands[0] and commands[1].endswith(f"--resume {folder}")


# ------------------------------------------------------------------------------------------------- local Ray


def test_local_sweep_completes_and_rerun_runs_nothing(scripts, tmp_path):
    """The laptop path: sweep.py starts (and stops) its own local Ray."""
    d = tmp_path / "s"
    args = ("--script-dir", str(scripts), "--scripts", "ok.py", "--envs", "A", "BB", "--seeds", "1-2",
            "--sweep-dir", str(d), "--num-cpus", "2", "--threads-per-run", "3",
            "--", "--sleep", "0.5", "--track", "--wandb-mode", "offline")
    first = run_sweep(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    done = finished(d)
    assert sorted(done) == sorted(f"ok__{e}__{s}__{sweep.flag_hash(('--sleep', '0.5'))}" for e in ("A", "BB")
                                  for s in (1, 2))
    assert starts(d) == Counter({run_id: 1 for run_id in done})
    for run_id, final in done.items():
        env, seed = run_id.split("__")[1:3]
        assert (final["env_id"], final["seed"]) == (env, int(seed))
        argv = final["argv"]
        assert argv[argv.index("--runs-dir") + 1] == str(d / run_id)
        assert argv[argv.index("--wandb-group") + 1] == "s" and "--track" in argv and "offline" in argv
        assert final["omp"] == final["mkl"] == "3" and final["cuda"] == ""  # --gpus-per-run 0: no GPU visible
    # summary: env A over seeds 1, 2 has returns 11 and 21 -> mean 16.0, sample std 7.07
    assert re.search(r"ok\s+\|\s+--sleep 0.5\s+\|\s+A\s+\|\s+2/2\s+\|\s+16.0 ± 7.1", first.stdout), first.stdout
    assert "4/4 done (0 skipped as already done, 4 ran now" in first.stdout
    assert sorted(p.name for p in (d / "runs").iterdir()) == sorted(done)
    assert all((p / "final.json").is_file() for p in (d / "runs").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in d.glob("*__*/*/final.json")}

    second = run_sweep(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 runs, 4 already done, 0 to run" in second.stdout
    assert starts(d) == Counter({run_id: 1 for run_id in done})
    assert {p: p.stat().st_mtime_ns for p in d.glob("*__*/*/final.json")} == stamps


# ------------------------------------------------------------------------------------- two-node Ray cluster


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, each started with `ray start` on this machine (1 CPU each, own temp dirs).
    Yields (address, env for sweep.py). Ray 2.60 maps 127.0.0.1 to the host's address for multi-node clusters, so
    the cluster requires a token of its own (token auth), given to every process through the environment.
    Teardown ends exactly the processes started here (their process groups)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="rs"))  # short: Ray's unix socket paths must stay < 108 characters
    (tmp / "token").write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp / "token")}
    ray_cli = Path(sys.executable).parent / "ray"
    ray_cli = str(ray_cli) if ray_cli.exists() else shutil.which("ray")
    procs = []

    def start(*args, name):
        log = open(tmp / f"{name}.log", "w")
        procs.append(subprocess.Popen([ray_cli, "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                                       "--temp-dir", str(tmp / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True))

    def alive_nodes() -> int:
        out = subprocess.run([ray_cli, "status", "--address", address], capture_output=True, text=True, env=env)
        active = out.stdout.split("Active:")[-1].split("Pending:")[0] if out.returncode == 0 else ""
        return len(re.findall(r"^\s*\d+ node_", active, re.M))

    try:
        start("--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
              name="head")
        deadline = time.time() + 90
        while alive_nodes() < 1:
            assert time.time() < deadline, (tmp / "head.log").read_text()
            time.sleep(0.5)
        start("--address", address, name="worker")
        while alive_nodes() < 2:
            assert time.time() < deadline, (tmp / "worker.log").read_text()
            time.sleep(0.5)
        yield address, env
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_node_cluster_runs_sweep_submitted_with_address(cluster, scripts, tmp_path):
    address, env = cluster
    d = tmp_path / "s"
    out = run_sweep("--address", address, "--script-dir", str(scripts), "--scripts", "ok.py", "--envs", "A", "B",
                    "--seeds", "1-2", "--sweep-dir", str(d), "--cpus-per-run", "1", "--", "--sleep", "3", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(finished(d)) == 4 and sum(starts(d).values()) == 4
    status = json.loads((d / "sweep_status.json").read_text())["runs"]
    # 1 CPU per node and 1 CPU per run: the two concurrent runs can only fit on two different nodes.
    assert len({s["node"] for s in status.values()}) == 2
    assert all(s["status"] == "done" and s["attempts"] == 1 for s in status.values())


def test_failed_run_is_retried_then_reported_while_others_finish(cluster, scripts, tmp_path):
    address, env = cluster
    d = tmp_path / "s"
    out = run_sweep("--address", address, "--script-dir", str(scripts), "--scripts", "ok.py", "fail.py", "flaky.py",
                    "--envs", "A", "--seeds", "1-2", "--sweep-dir", str(d), "--max-retries", "2", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    h = sweep.flag_hash(())
    expected_starts = {f"{m}__A__{s}__{h}": n for m, n in (("ok", 1), ("flaky", 2), ("fail", 3)) for s in (1, 2)}
    assert starts(d) == Counter(expected_starts)
    assert sorted(finished(d)) == sorted(k for k in expected_starts if not k.startswith("fail"))
    for s in (1, 2):
        report = out.stdout.split(f"FAILED fail__A__{s}__{h} after 3 attempt(s), last exit 3")[1]
        assert f"boom-A-{s}-attempt3" in report.split("FAILED")[0]
    assert "4/6 done" in out.stdout and "2 failed" in out.stdout
    assert sorted(p.name for p in (d / "runs").iterdir()) == sorted(finished(d))


def test_interrupted_sweep_restarted_runs_only_the_missing_runs(cluster, scripts, tmp_path):
    address, env = cluster
    d = tmp_path / "s"
    args = ("--address", address, "--script-dir", str(scripts), "--scripts", "ok.py", "--envs", "A", "B", "C",
            "--seeds", "1-2", "--sweep-dir", str(d), "--", "--sleep", "4")
    proc = subprocess.Popen(sweep_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=env)
    deadline = time.time() + 120
    while len(finished(d)) < 2 or len(starts(d)) <= len(finished(d)):  # some done, some running
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    before = finished(d)
    started_before = starts(d)
    assert 2 <= len(before) < 6 and set(started_before) > set(before), out
    time.sleep(4.5)  # longer than a run: an interrupted run that was left running would finish now
    assert finished(d) == before
    stamps = {p: p.stat().st_mtime_ns for p in d.glob("*__*/*/final.json")}

    again = run_sweep(*args, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"6 runs, {len(before)} already done, {6 - len(before)} to run" in again.stdout
    assert len(finished(d)) == 6
    after = starts(d)
    assert all(after[r] == 1 for r in before)  # finished runs were never started again
    assert all(after[r] == started_before[r] + 1 for r in finished(d) if r not in before)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_real_atari_runs_through_the_sweep_and_report(cluster, tmp_path):
    """The atari100k preset narrowed to Pong, seed 1: NDDQN, DrQ and DrQ(eps) for a few hundred steps each (the
    drq-eps recipe would play its last game to the end, as dopamine does, hundreds of steps more)."""
    address, env = cluster
    d = tmp_path / "s"
    args = ("--address", address, "--preset", "atari100k", "--envs", "Pong", "--seeds", "1", "--sweep-dir", str(d),
            "--", "--total-timesteps", "300", "--learning-starts", "200", "--log-interval", "100",
            "--eval-episodes", "1", "--batch-size", "16", "--no-finish-last-game", "--no-cuda")
    out = run_sweep(*args, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    finals = finished(d)
    assert len(finals) == 3
    by_variant = {(f["algo"], f["end_e"], f["eval_epsilon"]) for f in finals.values()}
    assert by_variant == {("nddqn_atari", 0.1, 0.05), ("drq_dqn", 0.1, 0.05), ("drq_dqn", 0.01, 0.001)}
    for run_id, f in finals.items():
        assert (f["env_id"], f["seed"], f["total_timesteps"]) == ("PongNoFrameskip-v4", 1, 300)
        metrics = (d / run_id / f["run_name"] / "metrics.jsonl").read_text()
        assert "losses/td_loss" in metrics  # learning updates happened
        recipe = json.loads((d / run_id / f["run_name"] / "args.json").read_text())["recipe"]
        assert run_id.startswith(f"{f['algo']}.{recipe}__")  # the preset's recipe reached the script
        assert "final evaluation" in (d / run_id / "log.txt").read_text()

    i = args.index("--")
    again = run_sweep(*args[:i], "--report", *args[i:], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 already done, 0 to run" in again.stdout
    if (ROOT / "report.py").exists():
        assert any((d / "report").glob("*.md")), again.stdout + again.stderr

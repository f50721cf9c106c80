"""Sibling scripts duplicate algorithm blocks on purpose and must keep them textually identical (CONTRIBUTING.md),
so that a diff between siblings shows only the algorithm; run bookkeeping lives once, in the shared modules
(run_utils.py, dmc_envs.py, atari_envs.py, ae_files.py)."""
import ast
import importlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["nddqn_atari.py", "drq_dqn.py", "sac_state.py", "sac_pixels.py", "drq_sac.py", "sac_ae.py",
           "sac_ae_frozen.py", "pretrain_autoencoder.py"]
# block -> the scripts that must all hold it, identically
SHARED = {
    "random_shift": ["drq_dqn.py", "drq_sac.py", "sac_pixels.py"],
    "ReplayBuffer": ["nddqn_atari.py", "drq_dqn.py"],
    "main": ["nddqn_atari.py", "drq_dqn.py"],
    "update_actor_and_alpha": ["sac_state.py", "sac_pixels.py", "drq_sac.py"],
    "evaluate": ["sac_state.py", "sac_pixels.py", "drq_sac.py", "sac_ae.py", "sac_ae_frozen.py"],
}


def top_level_sources(path: Path) -> dict[str, str]:
    source = path.read_text()
    tree = ast.parse(source)
    return {node.name: ast.get_source_segment(source, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_block_is_identical_in_every_script_that_has_it(name):
    versions = {script: top_level_sources(ROOT / script).get(name) for script in SHARED[name]}
    assert all(versions.values()), f"{name} missing in {[s for s, v in versions.items() if v is None]}"
    reference = versions[SHARED[name][0]]
    drifted = [script for script, block in versions.items() if block != reference]
    assert not drifted, f"{name} differs from {SHARED[name][0]} in {drifted}"


ATARI = ["nddqn_atari.py", "drq_dqn.py"]
# shared module -> the scripts it serves; a script's own `make_env` and the Atari `final_evaluation` are its thin
# entry points over the module's function of that name (the script's frame stack, its Q-network's policy)
SERVES = {"run_utils": SCRIPTS, "ae_files": SCRIPTS, "atari_envs": ATARI,
          "dmc_envs": [s for s in SCRIPTS if s not in ATARI]}
ENTRY_POINTS = {"make_env", "final_evaluation"}


@pytest.mark.parametrize("module", sorted(SERVES))
def test_bookkeeping_is_written_once(module):
    shared = {name for name, value in vars(importlib.import_module(module)).items()
              if callable(value) and getattr(value, "__module__", None) == module} - ENTRY_POINTS
    assert shared, module
    for script in SERVES[module]:
        again = shared & set(top_level_sources(ROOT / script))
        assert not again, f"{script} redefines {sorted(again)} of {module}.py"


def test_atari_siblings_differ_only_by_drq():
    base, drq = top_level_sources(ROOT / "nddqn_atari.py"), top_level_sources(ROOT / "drq_dqn.py")
    assert set(drq) - set(base) == {"random_shift", "augment"}
    changed = {name for name in base if base[name] != drq[name]}
    assert changed <= {"Args", "update", "make_update", "validate", "final_evaluation"}


# issue 11: each training script at most ~500 lines, Args docstrings included, its run bookkeeping in the shared
# modules; sac_ae.py is sac_pixels.py's SAC plus SAC-AE's own target rates, first updates and pretrained start
MAX_LINES = {script: 500 for script in SCRIPTS} | {"sac_ae.py": 530}


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_script_stays_near_500_lines(script):
    lines = len((ROOT / script).read_text().splitlines())
    assert lines <= MAX_LINES[script], f"{script}: {lines} lines (limit {MAX_LINES[script]})"


# the function where each script's update begins (issue 11: before line 300, so the algorithm is not buried)
FIRST_UPDATE = {"nddqn_atari.py": "update", "drq_dqn.py": "update", "sac_state.py": "update_critic",
                "sac_pixels.py": "update_critic", "drq_sac.py": "update_critic", "sac_ae.py": "update_critic",
                "sac_ae_frozen.py": "update_critic", "pretrain_autoencoder.py": "ae_loss"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_update_starts_before_line_300(script):
    tree = ast.parse((ROOT / script).read_text())
    (line,) = [node.lineno for node in tree.body if isinstance(node, ast.FunctionDef)
               and node.name == FIRST_UPDATE[script]]
    earlier = [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.lineno < line
               and node.name.startswith(("update", "learn", "ae_loss"))]
    assert line < 300 and not earlier, f"{script}: {FIRST_UPDATE[script]} at line {line}, after {earlier}"


@pytest.mark.parametrize("base, drq, limit",
                         [("nddqn_atari.py", "drq_dqn.py", 62), ("sac_pixels.py", "drq_sac.py", 77)])
def test_sibling_diff_stays_small(base, drq, limit):
    """`diff base drq` shows what DrQ adds; it must not grow past what issue 11 found (GNU diff's count)."""
    out = subprocess.run(["diff", str(ROOT / base), str(ROOT / drq)], capture_output=True, text=True).stdout
    changed = sum(line.startswith(("<", ">")) for line in out.splitlines())
    assert 0 < changed <= limit, f"diff {base} {drq}: {changed} changed lines (limit {limit})"

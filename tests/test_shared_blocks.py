"""Sibling scripts duplicate algorithm blocks on purpose and must keep them textually identical (CONTRIBUTING.md),
so that a diff between siblings shows only the algorithm; run bookkeeping lives once, in run_utils.py."""
import ast
from pathlib import Path

import pytest

import run_utils

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


def test_bookkeeping_is_written_once():
    shared = {name for name, value in vars(run_utils).items()
              if callable(value) and getattr(value, "__module__", None) == "run_utils"}
    for script in SCRIPTS:
        again = shared & set(top_level_sources(ROOT / script))
        assert not again, f"{script} redefines {sorted(again)} of run_utils.py"


def test_atari_siblings_differ_only_by_drq():
    base, drq = top_level_sources(ROOT / "nddqn_atari.py"), top_level_sources(ROOT / "drq_dqn.py")
    assert set(drq) - set(base) == {"random_shift", "augment"}
    changed = {name for name in base if base[name] != drq[name]}
    assert changed <= {"Args", "update", "make_update", "validate", "final_evaluation"}

"""The blocks that training scripts share on purpose must stay textually identical (CONTRIBUTING.md), so that a
diff between sibling scripts shows only the algorithm."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["nddqn_atari.py", "drq_dqn.py", "sac_state.py", "sac_pixels.py", "drq_sac.py", "sac_ae.py",
           "pretrain_autoencoder.py"]
SHARED = ["get_device", "random_shift", "code_version", "RunLogger", "Progress"]


def top_level_sources(path: Path) -> dict[str, str]:
    source = path.read_text()
    tree = ast.parse(source)
    return {node.name: ast.get_source_segment(source, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("name", SHARED)
def test_shared_block_is_identical_in_every_script_that_has_it(name):
    versions = {}
    for script in SCRIPTS:
        if (ROOT / script).exists():
            block = top_level_sources(ROOT / script).get(name)
            if block is not None:
                versions[script] = block
    if name != "random_shift":  # every training script logs, picks a device and reports progress
        assert {"nddqn_atari.py", "drq_dqn.py"} <= set(versions)
    reference = versions["drq_dqn.py"]
    drifted = [script for script, block in versions.items() if block != reference]
    assert not drifted, f"{name} differs from drq_dqn.py in {drifted}"


def test_atari_siblings_differ_only_by_drq():
    base, drq = top_level_sources(ROOT / "nddqn_atari.py"), top_level_sources(ROOT / "drq_dqn.py")
    assert set(drq) - set(base) == {"random_shift", "augment"}
    changed = {name for name in base if base[name] != drq[name]}
    assert changed <= {"Args", "td_loss", "validate", "final_evaluation"}

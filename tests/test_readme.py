"""The README's flag tables list every flag of every training script, and name no flag that no script has: each
script's own `--help` (tyro's, through the script's parse_args) is the reference."""
import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ["nddqn_atari", "drq_dqn", "sac_state", "sac_pixels", "drq_sac", "sac_ae", "sac_ae_frozen",
            "pretrain_autoencoder"]
TOOLS = ["benchmark_runtime", "report", "sweep"]
FLAG = re.compile(r"--[a-z][a-z0-9-]*[a-z0-9]")


def positive(flags: set[str]) -> set[str]:
    """`--no-x` of a boolean `--x` is documented with it (tyro writes the pair as `--x, --no-x`)."""
    return {f"--{f[5:]}" if f.startswith("--no-") and f"--{f[5:]}" in flags else f for f in flags}


def help_flags(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        if hasattr(module, "parse_args"):
            module.parse_args(["--help"])
        else:
            import tyro

            tyro.cli(module.Args, args=["--help"])
    return positive(set(FLAG.findall(out.getvalue()))) - {"--help"}


def readme_table_flags() -> set[str]:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")]
    return positive(set(FLAG.findall("\n".join(rows))))


@pytest.mark.parametrize("script", TRAINING)
def test_every_flag_of_every_training_script_is_in_a_readme_table(script):
    missing = help_flags(script) - readme_table_flags()
    assert not missing, f"{script}.py flags missing from the README's tables: {sorted(missing)}"


def test_readme_tables_name_no_flag_that_does_not_exist():
    known = set().union(*(help_flags(name) for name in TRAINING + TOOLS))
    stale = readme_table_flags() - known
    assert not stale, f"README tables name flags no script has: {sorted(stale)}"

"""benchmark_runtime.py --quick on CPU: every variant runs, and the counted passes match a hand count."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import benchmark_runtime as bench  # noqa: E402

B = 16  # the quick-mode batch size


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = bench.Args(quick=True, device="cpu", km_grid=["1x1", "2x2"], dqn_km_grid=["1x1", "2x2"], out_dir=str(out))
    result = bench.main(args)
    return out, {r["variant"]: r for r in result["rows"]}


def test_quick_mode_runs_every_variant(quick):
    out, rows = quick
    expected = ["sac_state", "sac_pixels", "drq_sac_k1_m1", "drq_sac_k2_m2", "nddqn_atari", "drq_dqn_k1_m1",
                "drq_dqn_k2_m2"] + [f"sac_ae_{mode}" for mode in bench.SAC_AE_MODES]
    assert sorted(rows) == sorted(expected)
    for name, r in rows.items():
        if name.startswith("sac_ae") and not (ROOT / "sac_ae.py").exists():
            assert r["status"].startswith("unavailable")
            continue
        assert r["status"] == "ok", (name, r["status"])
        assert r["batch_size"] == B and r["repeats"] == 2
        assert 0 < r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        assert r["updates_per_s"] == pytest.approx(1e3 / r["mean_ms"])
        assert r["cpu_median_ms"] > 0 and r["device"] == "cpu"
        assert (r["aug_ms"] is not None) == name.startswith("drq_")
        # a variant with tiny tensors may fit in memory the allocator already holds, so its peak extra can be 0
        assert r["gflops"] > 0 and r["peak_memory_mb"] >= 0
    # the pixel variants build a 9x84x84 frame buffer and conv activations: their peak extra is real
    assert min(rows[name]["peak_memory_mb"] for name in ("sac_pixels", "drq_sac_k2_m2")) > 1
    for suffix in (".json", ".csv", ".png"):
        assert (out / f"benchmark_cpu_quick{suffix}").stat().st_size > 0
    with open(out / "benchmark_cpu_quick.csv") as f:
        assert {r["variant"] for r in csv.DictReader(f)} == set(rows)
    assert json.loads((out / "benchmark_cpu_quick.json").read_text())["meta"]["nproc"] >= 1


# Hand count of one DMC update (sac_pixels.update / drq_sac.update at agent step i), from spec §1.2 and the code:
#   critic update, every step:
#     target: actor(next_obs)          -> actor.encoder, actor.trunk                          2 calls on K*B rows
#             critic_target(next_obs)  -> critic_target.encoder, .q1, .q2                     3 calls on K*B rows
#     loss:   critic(obs)              -> critic.encoder, critic.q1, critic.q2                3 calls on M*B rows
#     one loss.backward()
#   actor and temperature update, at even steps only (policy_frequency 2), on the first copy of obs (B rows):
#             actor(obs)               -> actor.encoder, actor.trunk                          2 calls
#             critic(obs, a)           -> critic.encoder, critic.q1, critic.q2                3 calls
#     actor_loss.backward() and alpha_loss.backward()
# So an even step has 8 + 5 = 13 forward calls and 3 backward passes, an odd step 8 and 1. Counting each
# augmented copy as its own pass (rows / B): 2K + 3K + 3M at odd steps, + 5 at even steps (K=M=2: 16 and 21;
# the reproduction report counted 19 forward passes for its K=2, M=2). The conv stack is shared by actor and
# critic (spec §1.1), so its samples are K*B (actor, target) + K*B (target critic) + M*B (critic) = (2K+M)*B at odd
# steps, + 2B (actor and critic on obs) at even steps; gradients reach the convs only from the critic loss (the
# actor losses detach them): M*B samples at every step.
def dmc_hand_count(k: int, m: int) -> dict:
    return {"fwd": [13, 8], "bwd": [3, 1], "fwd_equiv": [5 * k + 3 * m + 5, 5 * k + 3 * m],
            "enc_fwd": [(2 * k + m + 2) * B, (2 * k + m) * B], "enc_bwd": [m * B, m * B]}


# Atari (nddqn_atari.update / drq_dqn.update): with the target synced every step (spec §2.3) the target network is
# the online network, so the double-DQN target needs one forward call on the K copies of s' (argmax and value
# from the same Q values), and the loss one on the M copies of s: 2 forward calls on K*B and M*B rows, one
# backward pass reaching the convs with M*B rows.
def atari_hand_count(k: int, m: int) -> dict:
    return {"fwd": [2], "bwd": [1], "fwd_equiv": [k + m], "enc_fwd": [(k + m) * B], "enc_bwd": [m * B]}


# sac_ae.py --ae-mode joint adds SAC-AE's autoencoder step to sac_pixels' update at every step: critic.encoder and
# the decoder on the B states (2 forward calls, B conv samples with gradient) and one more backward pass.
# --ae-mode frozen: MLPs on latent vectors, no conv: at even steps actor.trunk x2, critic.q1/q2 x2, target q1/q2
# = 8 calls, at odd steps 5.
def sac_ae_hand_count(mode: str) -> dict:
    if mode == "frozen":
        return {"fwd": [8, 5], "bwd": [3, 1], "fwd_equiv": [8, 5], "enc_fwd": [0, 0], "enc_bwd": [0, 0]}
    c = dmc_hand_count(1, 1)
    return {"fwd": [15, 10], "bwd": [4, 2], "fwd_equiv": [15, 10], "enc_fwd": [x + B for x in c["enc_fwd"]],
            "enc_bwd": [2 * B, 2 * B]}


@pytest.mark.parametrize("variant,expected", [
    ("sac_ae_frozen", sac_ae_hand_count("frozen")),
    ("sac_ae_joint", sac_ae_hand_count("joint")),
    ("sac_pixels", dmc_hand_count(1, 1)),
    ("drq_sac_k1_m1", dmc_hand_count(1, 1)),
    ("drq_sac_k2_m2", dmc_hand_count(2, 2)),
    ("nddqn_atari", atari_hand_count(1, 1)),
    ("drq_dqn_k1_m1", atari_hand_count(1, 1)),
    ("drq_dqn_k2_m2", atari_hand_count(2, 2)),
])
def test_pass_counts_match_hand_count(quick, variant, expected):
    _, rows = quick
    if rows[variant]["status"] != "ok":
        pytest.skip(f"{variant}: {rows[variant]['status']}")
    counts = rows[variant]["per_step_counts"]
    for key, value in expected.items():
        assert counts[key] == pytest.approx(value), (variant, key)
    assert rows[variant]["forward_passes"] == pytest.approx(sum(expected["fwd"]) / len(expected["fwd"]))


def test_flops_and_buffer_bytes(quick):
    _, rows = quick
    # Augmentation adds no matmul or convolution: DrQ K=M=1 has exactly SAC:pixel's FLOPs, and K=M=2 more.
    assert rows["drq_sac_k1_m1"]["gflops"] == pytest.approx(rows["sac_pixels"]["gflops"])
    assert rows["drq_dqn_k1_m1"]["gflops"] == pytest.approx(rows["nddqn_atari"]["gflops"])
    assert rows["drq_sac_k2_m2"]["expected_cost_ratio"] > 1.3
    # Buffer bytes by hand. DMC pixels (cartpole, action repeat 8 -> 125-step episodes, 1 action, capacity 300):
    # RGB frames once each plus one per episode and stack + 1 slack, (S+1) int64 frame indices, float32 action,
    # reward and not_done, and an int64 oldest-frame number per transition.
    cap, frames = 300, 300 + math.ceil(300 / 125) + 3 + 1
    dmc = (frames * 3 * 84 * 84 + cap * (4 * 8 + 4 + 4 + 4 + 8)) / cap
    assert rows["sac_pixels"]["buffer_bytes_per_transition"] == pytest.approx(dmc, abs=1)
    # Atari: one 84x84 frame, int64 action, float32 reward, 3 bool flags (plus a 44-byte discount table).
    assert rows["nddqn_atari"]["buffer_bytes_per_transition"] == pytest.approx(84 * 84 + 8 + 4 + 3, abs=1)


def test_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.main(bench.Args(quick=True, variants=["nope"], out_dir=str(tmp_path)))
    assert str(e.value).startswith("error: unknown variant(s) nope")
    with pytest.raises(SystemExit) as e:
        bench.main(bench.Args(quick=True, km_grid=["2by2"], out_dir=str(tmp_path)))
    assert str(e.value).startswith("error: grid entry")

"""benchmark_runtime.py --quick on CPU: every variant runs, and the counted passes and FLOPs match hand counts;
the speed options of the DMC pixel scripts (channels_last, --compile) keep the update's arithmetic."""

import csv
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import benchmark_runtime as bench  # noqa: E402
import drq_sac  # noqa: E402
import sac_pixels  # noqa: E402

B = 16  # the quick-mode batch size


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one thread: two threads on a CPU shared with other jobs spin-wait for each other and take many times longer
    threads = torch.get_num_threads()
    args = bench.Args(quick=True, device="cpu", threads=1, km_grid=["1x1", "2x2"], dqn_km_grid=["1x1", "2x2"],
                      out_dir=str(out))
    try:
        result = bench.main(args)
    finally:
        torch.set_num_threads(threads)
    return out, result["meta"], {r["variant"]: r for r in result["rows"]}


def test_quick_mode_runs_every_variant(quick):
    out, meta, rows = quick
    expected = ["sac_state", "sac_pixels", "drq_sac_k1_m1", "drq_sac_k2_m2", "nddqn_atari", "drq_dqn_k1_m1",
                "drq_dqn_k2_m2"] + [f"sac_ae_{mode}" for mode in bench.SAC_AE_MODES]
    assert sorted(rows) == sorted(expected)
    peak = meta["kernel_peak"]
    assert peak["gflops_per_s"] == max(r["gflops_per_s"] for r in peak["all"]) > 0 and len(peak["all"]) == 4
    assert meta["allocator_tuned"] == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    for name, r in rows.items():
        assert r["batch_size"] == B and r["repeats"] == 2
        assert 0 < r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        assert r["updates_per_s"] == pytest.approx(1e3 / r["mean_ms"])
        assert r["user_ms"] > 0 and r["sys_ms"] >= 0 and r["device"] == "cpu"
        assert r["cpu_mean_ms"] == pytest.approx(r["user_ms"] + r["sys_ms"])
        assert r["minflt_per_update"] >= 0 and r["majflt_per_update"] >= 0
        # 2 repeats: one actor step and one critic-only step on DMC, whose mean is the amortized time
        assert r["amortized_ms"] == pytest.approx(r["mean_ms"] if r["domain"] == "dmc" else r["median_ms"])
        assert r["gflops_per_s"] == pytest.approx(r["gflops"] / (r["amortized_ms"] / 1e3))
        assert r["pct_of_kernel_peak"] == pytest.approx(100 * r["gflops_per_s"] / peak["gflops_per_s"])
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


# sac_ae.py (sac_ae_joint) adds SAC-AE's autoencoder step to sac_pixels' update at every step: critic.encoder and
# the decoder on the B states (2 forward calls, B conv samples with gradient) and one more backward pass.
# sac_ae_frozen.py: MLPs on latent vectors, no conv: at even steps actor.trunk x2, critic.q1/q2 x2, target q1/q2
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
    _, _, rows = quick
    counts = rows[variant]["per_step_counts"]
    for key, value in expected.items():
        assert counts[key] == pytest.approx(value), (variant, key)
    assert rows[variant]["forward_passes"] == pytest.approx(sum(expected["fwd"]) / len(expected["fwd"]))


def dmc_flops_by_hand(k: int, m: int, b: int = B, action_dim: int = 1, hidden: int = 1024, feature: int = 50) -> float:
    """Matmul and convolution FLOPs of one DMC update, averaged over an actor step and a critic-only step. Spec
    §1.1 shapes: four 3x3 convs with 32 filters on 9x84x84 (strides 2-1-1-1, 84 -> 41 -> 39 -> 37 -> 35), the head
    Linear(32*35*35, 50), MLPs 50 -> 1024 -> 1024 -> out. A conv forward costs 2*Cin*Cout*k*k*Hout*Wout per sample,
    a Linear 2*in*out; a backward costs one forward for the weight gradient and one more for the input gradient
    where the input needs one."""
    convs, size = [], 84
    for c_in, stride in [(9, 2), (32, 1), (32, 1), (32, 1)]:
        size = (size - 3) // stride + 1
        convs.append(2 * c_in * 32 * 3 * 3 * size * size)
    conv, first_conv = sum(convs), convs[0]
    head = 2 * 32 * size * size * feature
    trunk = 2 * (feature * hidden + hidden * hidden + hidden * 2 * action_dim)  # the actor: mean and log-std
    q = 2 * ((feature + action_dim) * hidden + hidden * hidden + hidden * 1)  # one Q head on (feature, action)
    actor_fwd, critic_fwd = conv + head + trunk, conv + head + 2 * q
    # critic loss backward: weight gradients everywhere, input gradients everywhere but the first conv (its input
    # is the frames)
    critic_bwd = (2 * conv - first_conv) + 2 * head + 2 * 2 * q
    # actor loss: actor and critic on detached conv features (convs forward only), so both heads get only weight
    # gradients; the actor trunk and the Q heads (through the action) get both, and the critic's weight gradients
    # are computed too (its parameters require grad), though only the actor's optimizer steps
    actor_step = actor_fwd + critic_fwd + head + 2 * trunk + head + 2 * 2 * q
    # every step: target on the K copies (actor and target critic, no gradient), critic loss on the M copies
    critic_only = k * b * (actor_fwd + critic_fwd) + m * b * (critic_fwd + critic_bwd)
    return critic_only + b * actor_step / 2  # the actor step comes every second update


@pytest.mark.parametrize("variant,k,m", [("sac_pixels", 1, 1), ("drq_sac_k2_m2", 2, 2)])
def test_flop_count_matches_hand_count(quick, variant, k, m):
    _, _, rows = quick
    assert rows[variant]["flops_per_update"] == dmc_flops_by_hand(k, m)


def test_flops_and_buffer_bytes(quick):
    _, _, rows = quick
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


def test_several_dmc_batch_sizes_are_compared_per_batch_size():
    args = bench.Args(dmc_batch_size=[128, 512], km_grid=["2x2"])
    names = [name for name, _, _ in bench.variant_specs(args, torch.device("cpu"))]
    assert {"sac_pixels_b128", "drq_sac_k2_m2_b128", "sac_pixels_b512", "drq_sac_k2_m2_b512",
            "nddqn_atari"} <= set(names)
    rows = [{"variant": f"{algo}_b{b}", "algo": algo, "domain": "dmc", "device": "cuda", "batch_size": b,
             "gflops": gflops, "mean_ms": ms}
            for algo, b, gflops, ms in [("sac_pixels", 128, 2.0, 10.0), ("drq_sac", 128, 4.0, 30.0),
                                        ("sac_pixels", 512, 8.0, 50.0), ("drq_sac", 512, 16.0, 90.0)]]
    bench.add_ratios(rows)
    assert [(r["baseline"], r["expected_cost_ratio"], r["measured_cost_ratio"]) for r in rows] == [
        ("sac_pixels_b128", 1.0, 1.0), ("sac_pixels_b128", 2.0, 3.0), ("sac_pixels_b512", 1.0, 1.0),
        ("sac_pixels_b512", 2.0, 1.8)]


# ---------------------------------------------------------------------------------------------------------------
# Speed options of sac_pixels.py and drq_sac.py: the same arithmetic, up to float rounding


def one_update(module, step: int, obs_shape=(9, 84, 84), **options) -> tuple[dict, dict, object]:
    """The metrics and every gradient of one update (drq_sac with K = M = 2) from a fixed agent, buffer and RNG.
    Gradients, not parameters, are compared, and the critic's learning rate is 0: Adam's first step is
    lr * g / (|g| + eps), so a rounding difference in a gradient near 0 would move a parameter by up to lr, and the
    actor's loss, computed after the critic's step, would inherit it."""
    torch.manual_seed(0)
    agent = module.make_agent(obs_shape, 2, torch.device("cpu"), hidden_dim=32, q_lr=0.0, **options)
    rb = module.ReplayBuffer(60, obs_shape, 2, torch.device("cpu"), episode_len=20)
    bench.fill_dmc_buffer(rb, 60, obs_shape, 2, 20, np.random.default_rng(0))
    torch.manual_seed(1)
    kw = {"k": 2, "m": 2} if module is drq_sac else {}
    metrics = module.update(agent, rb, step, 8, **kw)
    params = [(f"{owner}.{name}", p) for owner in ("actor", "critic")
              for name, p in getattr(agent, owner).named_parameters()]
    grads = {name: p.grad.clone() for name, p in params + [("log_alpha", agent.log_alpha)] if p.grad is not None}
    return {key: value.item() for key, value in metrics.items()}, grads, agent


def assert_same_update(a, b):
    (metrics_a, grads_a, _), (metrics_b, grads_b, _) = a, b
    assert metrics_a.keys() == metrics_b.keys() and grads_a.keys() == grads_b.keys()
    for key in metrics_a:
        assert metrics_a[key] == pytest.approx(metrics_b[key], rel=1e-5, abs=1e-6), key
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("module", [drq_sac, sac_pixels], ids=["drq_sac", "sac_pixels"])
def test_channels_last_keeps_the_update(module):
    # an actor step: critic, actor and temperature gradients
    fast, plain = one_update(module, 2, channels_last=True), one_update(module, 2, channels_last=False)
    assert_same_update(fast, plain)
    # gradients of log-alpha, the critic (convs, head, two Q heads), and the actor (the tied convs, head, trunk)
    assert len(fast[1]) == 1 + (8 + 4 + 2 * 6) + (8 + 4 + 6)
    # and the option takes effect: the convs run in channels_last
    frames = torch.randint(0, 256, (4, 9, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        for agent, layout in ((fast[2], torch.channels_last), (plain[2], torch.contiguous_format)):
            out = agent.critic.encoder.convs(frames.contiguous(memory_format=agent.critic.encoder.memory_format)
                                             .float())
            assert out.is_contiguous(memory_format=layout)
    assert drq_sac.Args().channels_last and sac_pixels.Args().channels_last and not drq_sac.Args().compile


def test_compiled_update_matches_eager():
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # torch raises its own InvalidCxxCompiler, or OSError when probing
        pytest.skip(f"torch.compile needs a C++ compiler on CPU and found none ({type(exc).__name__}); "
                    "apt-get install build-essential")
    # a critic-only step on 24x24 frames: compiling the actor step too would take minutes on 2 cores
    compiled = one_update(drq_sac, 1, (9, 24, 24), compile_networks=True)
    eager = one_update(drq_sac, 1, (9, 24, 24))
    torch._dynamo.reset()
    assert_same_update(compiled, eager)
    assert len(compiled[1]) == (8 + 4 + 2 * 6) + 8  # the critic's, and the actor's tied convs (the same tensors)
    # compiled in place: the parameter names, and so checkpoints, are those of eager mode
    assert compiled[2].critic.state_dict().keys() == eager[2].critic.state_dict().keys()


def test_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.main(bench.Args(quick=True, variants=["nope"], out_dir=str(tmp_path)))
    assert str(e.value).startswith("error: unknown variant(s) nope")
    with pytest.raises(SystemExit) as e:
        bench.main(bench.Args(quick=True, km_grid=["2by2"], out_dir=str(tmp_path)))
    assert str(e.value).startswith("error: grid entry")

"""What does DrQ cost? Times the update step of every algorithm on one device, with the networks, buffers and
update functions imported from the training scripts themselves (question 3 of the reproduction report).

    python benchmark_runtime.py                                   # every variant, CPU or the GPU if there is one
    python benchmark_runtime.py --device cuda --repeats 200       # on the GPU
    python benchmark_runtime.py --variants drq_sac sac_pixels --km-grid 2x2   # a subset
    python benchmark_runtime.py --quick                           # seconds: tiny batches, 2 repeats (tests)

For every variant it fills the script's replay buffer with synthetic transitions of the real shapes (pixel
content does not change the cost of dense convolutions), warms up, counts, then times single updates (sampling,
augmentation and every optimiser step of one agent step, exactly as the training loop calls them), synchronising
the device around each. The timed updates run round robin over the variants, so load from other processes on a
shared machine hits all of them alike. Reported per variant:
- median and interquartile range of the update time; updates per second (1 / mean: on DMC the actor updates every
  other step, so the mean is the throughput); the time of the augmentation of one update alone;
- forward passes (calls of an encoder, MLP or Q network; also counted as if every augmented copy were its own
  pass) and backward passes (loss.backward calls) per update, counted with module hooks; image-encoder (conv stack)
  samples per update, forward and with gradient;
- FLOPs per update (matmuls and convolutions, forward and backward, torch.utils.flop_counter) and the
  FLOP-proportional expected cost next to the measured cost, both relative to the baseline without augmentation
  (sac_pixels on DMC, nddqn_atari on Atari): a measured ratio above the expected one is overhead, not compute;
- replay-buffer bytes per transition, and the peak extra memory of the variant (CUDA: allocated device memory;
  CPU: resident set size) over what the process held before building it.
Writes results/benchmark_<device>.{json,csv,png} and prints the table.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import tyro

PROJECT_DIR = Path(__file__).resolve().parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

DMC_PIXEL_BASELINE = "sac_pixels"
ATARI_BASELINE = "nddqn_atari"


@dataclass
class Args:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to run: `auto` takes the GPU when torch sees one; `cuda` without a GPU is an error"""
    variants: list[str] | None = None
    """variants or algorithm names to run (for example `drq_sac sac_pixels`); default: all"""
    km_grid: list[str] = field(default_factory=lambda: ["1x1", "1x2", "2x1", "2x2"])
    """(K)x(M) values of the drq_sac variants"""
    dqn_km_grid: list[str] = field(default_factory=lambda: ["1x1"])
    """(K)x(M) values of the drq_dqn variants (the paper uses 1x1 on Atari)"""
    dmc_batch_size: int = 512
    """minibatch of the DMC variants (512: the paper's main results, spec §1.4)"""
    atari_batch_size: int = 32
    """minibatch of the Atari variants (spec §2.3)"""
    repeats: int = 20
    """timed updates per variant"""
    atari_repeats: int | None = None
    """timed updates per Atari variant (default: --repeats); Atari updates are far cheaper than DMC's at batch 512"""
    warmup: int = 3
    """untimed updates before timing (allocator and autotuner warm-up)"""
    buffer_transitions: int = 10_000
    """transitions written to each replay buffer before timing (its capacity too)"""
    dmc_env_id: str = "cartpole-swingup"
    """dm_control task that sets the action and state sizes"""
    atari_env_id: str = "Breakout"
    """Atari game that sets the number of actions"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)"""
    seed: int = 0
    """seed of the synthetic data and the networks"""
    quick: bool = False
    """tests and smoke checks: batch 16, 2 repeats, 1 warm-up, 300 transitions (the numbers mean little); files get the tag _quick"""
    out_dir: str = "results"
    """where benchmark_<device><tag>.{json,csv,png} are written"""
    tag: str = ""
    """suffix of the output file names (benchmark_<device><tag>.*)"""


def fail(message: str):
    raise SystemExit(f"error: {message}")


# ---------------------------------------------------------------------------------------------------------------
# A variant: one update step of one algorithm, with the modules its passes are counted on
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    domain: str  # "dmc" or "atari"
    step: Callable[[int], None]  # one update at agent step i, exactly as the training loop calls it
    augment: Callable[[], None] | None  # the augmentation of one update alone (None: the variant does not augment)
    networks: dict[str, nn.Module]  # each forward call of these is one forward pass
    encoders: list[nn.Module]  # conv stacks: the image-encoder samples are counted on these
    buffer: object  # the replay buffer (has `capacity`)
    batch_size: int
    period: int = 1  # updates after which the pattern of calls repeats (actor updates every 2 steps on DMC)
    notes: str = ""
    next_step: int = 0  # the agent step of the next timed update


@dataclass
class Unavailable:
    name: str
    reason: str


def script(name: str):
    """Import a training script as a module; None when the file does not exist."""
    if not (PROJECT_DIR / f"{name}.py").exists():
        return None
    import importlib

    return importlib.import_module(name)


def parse_km(values: list[str]) -> list[tuple[int, int]]:
    out = []
    for v in values:
        try:
            k, m = (int(x) for x in v.lower().split("x"))
        except ValueError:
            fail(f"grid entry {v!r} is not KxM, for example 2x2")
        if k < 1 or m < 1:
            fail(f"grid entry {v!r}: K and M must be >= 1")
        out.append((k, m))
    return out


def dmc_shapes(env_id: str) -> tuple[int, int, int]:
    """(action dim, state dim, episode length in agent steps) of a dm_control task, read from its specs (no
    rendering)."""
    import drq_sac as ref  # any DMC script: resolve_env_id and the action-repeat table are shared blocks

    domain, task = ref.resolve_env_id(env_id)
    env = ref.suite.load(domain, task)
    action_dim = int(np.prod(env.action_spec().shape))
    state_dim = int(sum(np.prod(v.shape) for v in env.observation_spec().values()))
    episode_len = math.ceil(1000 / ref.default_action_repeat(env_id))
    return action_dim, state_dim, episode_len


def fill_dmc_buffer(rb, n: int, obs_shape: tuple[int, ...], action_dim: int, episode_len: int, rng) -> None:
    """n transitions in episodes of the task's length (the pixel buffer stores frames per episode)."""
    pool = [rng.integers(0, 256, size=obs_shape, dtype=np.uint8) if len(obs_shape) == 3
            else rng.normal(size=obs_shape).astype(np.float32) for _ in range(16)]
    for i in range(n):
        done = (i + 1) % episode_len == 0
        rb.add(pool[i % 16], rng.uniform(-1, 1, action_dim).astype(np.float32), float(rng.random()),
               pool[(i + 1) % 16], not_done=1.0, done=done)


def dmc_networks(agent) -> tuple[dict[str, nn.Module], list[nn.Module]]:
    """Forward passes: every encoder and MLP of actor, critic and target critic (modules holding parameters;
    sac_state's identity encoder has none). Encoder samples: the conv stacks (the actor's convs are the critic's,
    spec §1.1, so one module)."""
    nets, encoders = {}, []
    for owner in ("actor", "critic", "critic_target"):
        for child_name, child in getattr(agent, owner).named_children():
            if any(True for _ in child.parameters()):
                nets[f"{owner}.{child_name}"] = child
            convs = getattr(child, "convs", None)
            if convs is not None and all(convs is not e for e in encoders):
                encoders.append(convs)
    return nets, encoders


def build_sac(module_name: str, args: Args, device: torch.device, k: int = 1, m: int = 1) -> Variant | Unavailable:
    mod = script(module_name)
    name = module_name if module_name != "drq_sac" else f"drq_sac_k{k}_m{m}"
    if mod is None:
        return Unavailable(name, f"{module_name}.py not found")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    action_dim, state_dim, episode_len = dmc_shapes(args.dmc_env_id)
    obs_shape = (state_dim,) if module_name == "sac_state" else (9, 84, 84)
    agent = mod.make_agent(obs_shape, action_dim, device)
    if module_name == "sac_state":
        rb = mod.ReplayBuffer(args.buffer_transitions, obs_shape, action_dim, device)
    else:
        rb = mod.ReplayBuffer(args.buffer_transitions, obs_shape, action_dim, device, episode_len=episode_len)
    fill_dmc_buffer(rb, args.buffer_transitions, obs_shape, action_dim, episode_len, rng)
    b = args.dmc_batch_size
    nets, encoders = dmc_networks(agent)
    if module_name == "drq_sac":
        def step(i):
            mod.update(agent, rb, i, b, k=k, m=m, augment=mod.random_shift)

        obs, _, _, next_obs, _ = rb.sample(b)
        obs, next_obs = obs.repeat(m, 1, 1, 1), next_obs.repeat(k, 1, 1, 1)

        def augment():
            # exactly the augmentation inside drq_sac.update (the M copies of obs and K of next_obs, as it makes
            # them with or without augmentation, are made once here: sampling and copying are not augmentation)
            mod.random_shift(obs), mod.random_shift(next_obs)
    else:
        def step(i):
            mod.update(agent, rb, i, b)

        augment = None
    return Variant(name, "dmc", step, augment, nets, encoders, rb, b, period=2)


def fill_atari_buffer(rb, n: int, rng, segment: int = 200) -> None:
    """n rows in segments (lives) of `segment` agent steps, the last one terminal, as the training loop writes."""
    pool = [rng.integers(0, 256, size=(84, 84), dtype=np.uint8) for _ in range(16)]
    for i in range(n):
        rb.add(pool[i % 16], int(rng.integers(4)), float(rng.choice([0.0, 1.0])), (i + 1) % segment == 0,
               i % segment == 0)


def build_dqn(module_name: str, args: Args, device: torch.device, k: int = 1, m: int = 1) -> Variant | Unavailable:
    mod = script(module_name)
    name = module_name if module_name != "drq_dqn" else f"drq_dqn_k{k}_m{m}"
    if mod is None:
        return Unavailable(name, f"{module_name}.py not found")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    b = args.atari_batch_size
    cfg = mod.Args(batch_size=b, **({"k": k, "m": m} if module_name == "drq_dqn" else {}))
    env = mod.make_env(mod.resolve_env_id(args.atari_env_id), args.seed)
    n_actions = env.action_space.n
    env.close()
    q_network = mod.QNetwork(n_actions, padding=cfg.conv_padding).to(device)
    target_network = mod.make_target_network(q_network, cfg)  # the online network itself when synced every step
    optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    rb = mod.ReplayBuffer(args.buffer_transitions, cfg.n_step, cfg.gamma, 4, device)
    fill_atari_buffer(rb, args.buffer_transitions, rng)

    def step(i):
        # as the training loop: sample, update, then sync a separate target network if there is one
        mod.update(q_network, target_network, optimizer, rb.sample(b), cfg)
        if target_network is not q_network and i % cfg.target_network_frequency == 0:
            mod.sync_target(target_network, q_network)

    augment = None
    if module_name == "drq_dqn":
        batch = rb.sample(b)

        def augment():
            # drq_dqn.augment makes the copies and shifts them (plus intensity noise if configured); sampling is
            # done once, outside the timing
            mod.augment(batch["next_obs"], k, cfg.image_pad, cfg.intensity_scale)
            mod.augment(batch["obs"], m, cfg.image_pad, cfg.intensity_scale)

    networks = {"q_network": q_network}
    if target_network is not q_network:
        networks["target_network"] = target_network
    return Variant(name, "atari", step, augment, networks, [net.convs for net in networks.values()], rb, b, period=1)


def build_sac_ae(mode: str, args: Args, device: torch.device) -> Variant | Unavailable:
    """sac_ae.py --ae-mode frozen (the report's SAC on 8 stacked latents of a pretrained, frozen encoder: the
    update sees 400-float vectors, the encoder runs once per agent step while acting, outside the update) or joint
    (SAC-AE: pixels, plus the decoder and the reconstruction step on the critic's encoder every update), with each
    mode's temperature optimiser (spec §5); the batch is --dmc-batch-size for every DMC variant, so costs compare."""
    name = f"sac_ae_{mode}"
    mod = script("sac_ae")
    if mod is None:
        return Unavailable(name, "sac_ae.py not found")
    joint = mode == "joint"
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    action_dim, _, episode_len = dmc_shapes(args.dmc_env_id)
    cfg = mod.Args()
    obs_shape = (9, 84, 84) if joint else (8 * mod.FEATURE_DIM,)  # frozen: report §2, latents of the last 8 steps
    agent = mod.make_agent(obs_shape, action_dim, device, joint=joint, alpha_lr=1e-4 if joint else 1e-3,
                           alpha_beta=0.5 if joint else 0.9)
    rb = mod.ReplayBuffer(args.buffer_transitions, obs_shape, action_dim, device, episode_len=episode_len)
    fill_dmc_buffer(rb, args.buffer_transitions, obs_shape, action_dim, episode_len, rng)
    b = args.dmc_batch_size
    nets, encoders = dmc_networks(agent)
    if agent.decoder is not None:
        nets["decoder"] = agent.decoder

    def step(i):
        mod.update(agent, rb, i, b, cfg.gamma, cfg.tau, cfg.policy_frequency, cfg.target_network_frequency,
                   cfg.encoder_tau, cfg.decoder_frequency, cfg.decoder_latent_lambda)

    notes = "update only; the frozen encoder encodes one frame per agent step while acting" if not joint else ""
    return Variant(name, "dmc", step, None, nets, encoders, rb, b, period=2, notes=notes)


def variant_specs(args: Args, device: torch.device) -> list[tuple[str, str, Callable[[], Variant | Unavailable]]]:
    """(name, algo, builder) of every variant, in table order."""
    specs = []

    def add(name, algo, fn, *a, **kw):
        specs.append((name, algo, lambda: fn(*a, **kw)))

    add("sac_state", "sac_state", build_sac, "sac_state", args, device)
    add("sac_pixels", "sac_pixels", build_sac, "sac_pixels", args, device)
    for k, m in parse_km(args.km_grid):
        add(f"drq_sac_k{k}_m{m}", "drq_sac", build_sac, "drq_sac", args, device, k, m)
    for mode in SAC_AE_MODES:
        add(f"sac_ae_{mode}", "sac_ae", build_sac_ae, mode, args, device)
    add("nddqn_atari", "nddqn_atari", build_dqn, "nddqn_atari", args, device)
    for k, m in parse_km(args.dqn_km_grid):
        add(f"drq_dqn_k{k}_m{m}", "drq_dqn", build_dqn, "drq_dqn", args, device, k, m)
    return specs


SAC_AE_MODES = ("frozen", "joint")


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_passes(v: Variant, start: int) -> tuple[dict, float]:
    """Run v.period updates from agent step `start` (even, so a DMC actor update is among them) with hooks:
    forward calls of every network, the samples of each of those calls (to express batched copies as passes of
    one batch), the samples through the image encoders' conv stacks, the samples whose gradient reaches them,
    and calls of torch.autograd.backward. Returns per-step lists, and the matmul and convolution FLOPs (forward
    and backward, torch.utils.flop_counter) per update averaged over the period."""
    from torch.utils.flop_counter import FlopCounterMode

    per_step = []
    state = {}

    def fwd_hook(name):
        def hook(module, inputs, output):
            state["fwd"] += 1
            x = inputs[0] if inputs else None
            state["fwd_equiv"] += (x.shape[0] / v.batch_size) if isinstance(x, torch.Tensor) and x.dim() else 1
        return hook

    def enc_hook(module, inputs, output):
        n = inputs[0].shape[0]
        state["enc_fwd"] += n
        if output.requires_grad:
            def grad_hook(grad):
                state["enc_bwd"] += n
            output.register_hook(grad_hook)

    handles = [mod.register_forward_hook(fwd_hook(name)) for name, mod in v.networks.items()]
    handles += [enc.register_forward_hook(enc_hook) for enc in v.encoders]
    original_backward = torch.autograd.backward

    def counting_backward(*a, **kw):
        state["bwd"] += 1
        return original_backward(*a, **kw)

    torch.autograd.backward = counting_backward
    try:
        with FlopCounterMode(display=False) as flops:
            for i in range(start, start + v.period):
                state.update(fwd=0, fwd_equiv=0.0, enc_fwd=0, enc_bwd=0, bwd=0)
                v.step(i)
                per_step.append(dict(state))
    finally:
        torch.autograd.backward = original_backward
        for h in handles:
            h.remove()
    return {key: [s[key] for s in per_step] for key in per_step[0]}, flops.get_total_flops() / v.period


def time_calls(fn: Callable[[int], None], n: int, start: int, device: torch.device,
               cpu_times: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of n calls, synchronising the device around each; appends the process CPU seconds of
    each call to `cpu_times` (on a CPU shared with other work, CPU time measures the compute, wall time the wait)."""
    times = []
    for i in range(start, start + n):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        sync(device)
        times.append(time.perf_counter() - t0)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c0)
    return times


def buffer_bytes_per_transition(rb) -> float:
    total = 0
    for value in vars(rb).values():
        if isinstance(value, torch.Tensor):
            total += value.element_size() * value.nelement()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total / rb.capacity


def memory_mb(device: torch.device, peak: bool) -> float | None:
    """Current or peak memory: allocated device memory on CUDA; the process's resident set on the CPU."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**20
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:" if peak else "VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> float | None:
    """Reset the peak counter and return the current memory (the baseline a variant's peak is measured from)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    return memory_mb(device, peak=False)


def prepare(v: Variant, args: Args, device: torch.device, memory_before: float | None) -> dict:
    """Everything but the timed updates: warm-up, pass and FLOP counts, augmentation time, memory."""
    for i in range(args.warmup):
        v.step(i)
    start = 2 * ((args.warmup + 1) // 2)  # an even agent step: DMC actor updates run at even steps
    passes, flops = count_passes(v, start)
    v.next_step = start + v.period
    aug = None
    if v.augment is not None:
        aug = np.array(time_calls(lambda i: v.augment(), max(args.repeats, 5), 0, device)) * 1e3
    peak = memory_mb(device, peak=True)
    per_update = {key: float(np.mean(vals)) for key, vals in passes.items()}
    return {
        "variant": v.name, "domain": v.domain, "status": "ok", "device": device.type, "batch_size": v.batch_size,
        "aug_ms": float(np.median(aug)) if aug is not None else None,
        "forward_passes": per_update["fwd"], "forward_passes_unbatched": per_update["fwd_equiv"],
        "backward_passes": per_update["bwd"], "encoder_fwd_samples": per_update["enc_fwd"],
        "encoder_bwd_samples": per_update["enc_bwd"], "per_step_counts": passes,
        "gflops": flops / 1e9, "buffer_bytes_per_transition": buffer_bytes_per_transition(v.buffer),
        "peak_memory_mb": peak - memory_before if peak is not None and memory_before is not None else None,
        "notes": v.notes,
    }


def time_interleaved(prepared: list[tuple[Variant, dict]], args: Args, device: torch.device) -> None:
    """Round robin: each round times one update of every variant in turn, so a change in the machine's load (a
    shared CPU) hits all variants alike instead of biasing the ones measured during it."""
    times = {v.name: [] for v, _ in prepared}
    cpu = {v.name: [] for v, _ in prepared}
    wanted = {v.name: (args.atari_repeats or args.repeats) if v.domain == "atari" else args.repeats
              for v, _ in prepared}
    for r in range(max(wanted.values(), default=0)):
        for v, _ in prepared:
            if r < wanted[v.name]:
                times[v.name] += time_calls(v.step, 1, v.next_step, device, cpu[v.name])
                v.next_step += 1
    for v, row in prepared:
        t = np.array(times[v.name]) * 1e3
        row.update({"median_ms": float(np.median(t)), "p25_ms": float(np.percentile(t, 25)),
                    "p75_ms": float(np.percentile(t, 75)), "mean_ms": float(t.mean()),
                    "updates_per_s": float(1e3 / t.mean()), "repeats": int(len(t)),
                    "cpu_median_ms": float(np.median(cpu[v.name])) * 1e3,
                    "cpu_mean_ms": float(np.mean(cpu[v.name])) * 1e3})


def add_ratios(rows: list[dict]) -> None:
    """FLOP-proportional expectation next to the measurement, both relative to the domain's baseline without
    augmentation (sac_pixels on DMC pixels, nddqn_atari on Atari): if DrQ's cost were only its extra compute,
    measured_cost_ratio would equal expected_cost_ratio; overhead = measured / expected."""
    base = {r["domain"]: r for r in rows if r["status"] == "ok" and r["variant"] in (DMC_PIXEL_BASELINE,
                                                                                     ATARI_BASELINE)}
    for r in rows:
        b = base.get(r.get("domain"))
        if r["status"] != "ok" or b is None or not b["gflops"]:
            continue
        r["baseline"] = b["variant"]
        r["expected_cost_ratio"] = r["gflops"] / b["gflops"]
        r["measured_cost_ratio"] = r["mean_ms"] / b["mean_ms"]
        if r.get("device") == "cpu":  # process CPU time: robust to other load on a shared CPU
            r["measured_cpu_ratio"] = r["cpu_mean_ms"] / b["cpu_mean_ms"]
        r["overhead"] = r["measured_cost_ratio"] / r["expected_cost_ratio"] if r["expected_cost_ratio"] else None


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------

TABLE = [("variant", "variant", "{}"), ("batch_size", "B", "{}"), ("median_ms", "median ms", "{:.2f}"),
         ("p25_ms", "p25", "{:.2f}"), ("p75_ms", "p75", "{:.2f}"), ("updates_per_s", "upd/s", "{:.3g}"),
         ("cpu_median_ms", "CPU ms", "{:.0f}"),
         ("aug_ms", "aug ms", "{:.2f}"), ("forward_passes", "fwd", "{:g}"),
         ("forward_passes_unbatched", "fwd x copies", "{:g}"), ("backward_passes", "bwd", "{:g}"),
         ("encoder_fwd_samples", "enc samples", "{:g}"), ("gflops", "GFLOP", "{:.2f}"),
         ("expected_cost_ratio", "FLOP ratio", "{:.2f}"), ("measured_cost_ratio", "time ratio", "{:.2f}"),
         ("measured_cpu_ratio", "CPU-time ratio", "{:.2f}"),
         ("buffer_bytes_per_transition", "buffer B/transition", "{:.0f}"),
         ("peak_memory_mb", "peak extra MB", "{:.0f}")]


def format_table(rows: list[dict]) -> str:
    head = [h for _, h, _ in TABLE]
    body = []
    for r in rows:
        if r["status"] != "ok":
            body.append([r["variant"]] + [""] * (len(TABLE) - 2) + [r["status"]])
            continue
        body.append([fmt.format(r[k]) if r.get(k) is not None else "—" for k, _, fmt in TABLE])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def machine_description(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {"cpu": cpu, "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    meta["machine"] = f"{meta.get('gpu', cpu)}, {meta['nproc']} CPUs, torch {meta['torch']}"
    return meta


def save_chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.5 + 0.45 * len(ok)), gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(ok))
    med = np.array([r["median_ms"] for r in ok])
    err = np.array([[r["median_ms"] - r["p25_ms"] for r in ok], [r["p75_ms"] - r["median_ms"] for r in ok]])
    colors = ["C0" if r["domain"] == "dmc" else "C1" for r in ok]
    axes[0].barh(y, med, xerr=err, color=colors, capsize=3, label="update (median, IQR)")
    aug = [r["aug_ms"] or 0 for r in ok]
    axes[0].barh(y, aug, color="k", alpha=0.35, label="augmentation alone")
    axes[0].set_yticks(y, [f"{r['variant']} (B={r['batch_size']})" for r in ok])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per update (log scale)")
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8)
    axes[0].grid(axis="x", alpha=0.3)
    exp = [r.get("expected_cost_ratio") or np.nan for r in ok]
    meas = [r.get("measured_cost_ratio") or np.nan for r in ok]
    cpu = [r.get("measured_cpu_ratio") or np.nan for r in ok]
    h = 0.27 if any(np.isfinite(cpu)) else 0.4
    axes[1].barh(y - h, exp, height=h, color="gray", label="expected (FLOPs)")
    axes[1].barh(y, meas, height=h, color=colors, label="measured (wall time)")
    if any(np.isfinite(cpu)):
        axes[1].barh(y + h, cpu, height=h, color=colors, alpha=0.5, hatch="//", label="measured (CPU time)")
    axes[1].axvline(1.0, color="k", lw=1)
    axes[1].set_yticks(y, [""] * len(ok))
    axes[1].invert_yaxis()
    axes[1].set_xlabel(f"cost relative to {DMC_PIXEL_BASELINE} (DMC) / {ATARI_BASELINE} (Atari)")
    axes[1].legend(fontsize=8)
    axes[1].grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: Args) -> dict:
    if args.quick:
        args.dmc_batch_size = args.atari_batch_size = 16
        args.repeats, args.warmup, args.buffer_transitions, args.atari_repeats = 2, 1, 300, None
        args.tag = args.tag or "_quick"  # never overwrite a real measurement in results/
    if min(args.dmc_batch_size, args.atari_batch_size, args.repeats, args.buffer_transitions,
           args.atari_repeats or 1) < 1 or args.warmup < 0:
        fail("batch sizes, --repeats and --buffer-transitions must be >= 1, --warmup >= 0")
    if max(args.dmc_batch_size, args.atari_batch_size) > args.buffer_transitions:
        fail(f"a batch size is larger than --buffer-transitions {args.buffer_transitions}")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was given but torch sees no CUDA device; use --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = variant_specs(args, device)
    if args.variants:
        known = {n for n, _, _ in specs} | {a for _, a, _ in specs}
        unknown = [v for v in args.variants if v not in known]
        if unknown:
            fail(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        specs = [s for s in specs if s[0] in args.variants or s[1] in args.variants]
    meta = {**machine_description(device), "command": "python " + " ".join(shlex.quote(a) for a in
                                                                              [Path(sys.argv[0]).name] + sys.argv[1:]),
            "args": {k: v for k, v in vars(args).items()}}
    print(f"benchmark on {meta['machine']} ({device}); {len(specs)} variants", flush=True)
    rows, prepared = [], []
    for name, algo, build in specs:
        before = reset_peak_memory(device)
        try:
            v = build()
        except SystemExit:
            raise
        except Exception as e:  # a script whose API changed must not hide the other variants' numbers
            v = Unavailable(name, f"unavailable: {type(e).__name__}: {e}".splitlines()[0][:200])
        if isinstance(v, Unavailable):
            reason = v.reason if v.reason.startswith("unavailable") else f"unavailable: {v.reason}"
            rows.append({"variant": v.name, "domain": "dmc" if "sac" in algo else "atari", "status": reason})
            print(f"{v.name}: {reason}", flush=True)
            continue
        row = prepare(v, args, device, before)
        rows.append(row)
        prepared.append((v, row))
        print(f"{name}: {row['forward_passes']:g} fwd / {row['backward_passes']:g} bwd passes, "
              f"{row['encoder_fwd_samples']:g} encoder samples, {row['gflops']:.2f} GFLOP per update", flush=True)
    print("timing: round robin, one update per variant per round ...", flush=True)
    time_interleaved(prepared, args, device)
    del prepared
    add_ratios(rows)
    print(format_table(rows))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"benchmark_{device.type}{args.tag}"
    result = {"meta": meta, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    cols = [k for k, _, _ in TABLE] + ["domain", "device", "mean_ms", "cpu_mean_ms", "repeats", "encoder_bwd_samples",
                                         "baseline",
                                         "overhead", "status", "notes"]
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    save_chart(rows, stem.with_suffix(".png"), f"{meta['machine']} ({device.type}) — {meta['command']}")
    print(f"wrote {stem}.json, .csv, .png", flush=True)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

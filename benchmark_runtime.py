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
- where the time goes: achieved GFLOP/s (FLOPs per update over the amortized median time: the mean of the
  medians of each step of the period, so the alternating actor and critic-only steps weigh equally) and its share
  of a measured kernel peak (the fastest forward of the encoder's convolutions at batch 512 on the same device and
  threads, in the faster memory format); the process's user and kernel (sys) CPU time and minor and major page
  faults per update (resource.getrusage around each single timed update: host figures, also on CUDA);
- replay-buffer bytes per transition, and the peak extra memory of the variant (CUDA: allocated device memory;
  CPU: resident set size) over what the process held before building it.
Like the training scripts, it keeps freed host memory in the process (run_utils.tune_allocator), so the numbers are
those of a training run. Writes results/benchmark_<device>.{json,csv,png} and prints the table.
"""

from __future__ import annotations

import ctypes
import csv
import gc
import importlib
import json
import math
import os
import platform
import resource
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

import atari_envs  # noqa: E402
import run_utils  # noqa: E402

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
    dmc_batch_size: list[int] = field(default_factory=lambda: [512])
    """minibatch of the DMC variants (512: the paper's main results, 128: the authors' config, spec §1.4); with several, every DMC variant runs at each and its name ends in _b<size>"""
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
    peak_batch: int = 512
    """batch of the convolutions timed for the kernel peak"""
    quick: bool = False
    """tests and smoke checks: batch 16, 2 repeats, 1 warm-up, 300 transitions, kernel peak at batch 32 (the numbers mean little); files get the tag _quick"""
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
    import dmc_envs as ref

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


def build_sac(name: str, module_name: str, args: Args, device: torch.device, b: int, k: int = 1, m: int = 1) -> Variant:
    mod = importlib.import_module(module_name)
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


def build_dqn(name: str, module_name: str, args: Args, device: torch.device, k: int = 1, m: int = 1) -> Variant:
    mod = importlib.import_module(module_name)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    b = args.atari_batch_size
    cfg = mod.Args(batch_size=b, **({"k": k, "m": m} if module_name == "drq_dqn" else {}))
    env = atari_envs.make_env(atari_envs.resolve_env_id(args.atari_env_id), args.seed)
    n_actions = env.action_space.n
    env.close()
    q_network = mod.QNetwork(n_actions, padding=cfg.conv_padding).to(device)
    # the online network itself when synced every step
    target_network = mod.make_target_network(q_network, cfg.target_network_frequency)
    learn = mod.make_update(cfg)  # update with cfg's hyperparameters, as main binds it
    optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    rb = mod.ReplayBuffer(args.buffer_transitions, cfg.n_step, cfg.gamma, 4, device)
    fill_atari_buffer(rb, args.buffer_transitions, rng)

    def step(i):
        # as the training loop: sample, update, then sync a separate target network if there is one
        learn(q_network, target_network, optimizer, rb.sample(b))
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


def build_sac_ae(name: str, mode: str, args: Args, device: torch.device, b: int) -> Variant:
    """sac_ae_frozen.py (the report's SAC on 8 stacked latents of a pretrained, frozen encoder: the update sees
    400-float vectors, the encoder runs once per agent step while acting, outside the update) or sac_ae.py (SAC-AE:
    pixels, plus the decoder and the reconstruction step on the critic's encoder every update), each with its own
    temperature optimiser (spec §5); the batch is --dmc-batch-size for every DMC variant, so costs compare."""
    joint = mode == "joint"
    mod = importlib.import_module("sac_ae" if joint else "sac_ae_frozen")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    action_dim, _, episode_len = dmc_shapes(args.dmc_env_id)
    cfg = mod.Args()
    obs_shape = (9, 84, 84) if joint else (8 * mod.FEATURE_DIM,)  # frozen: report §2, latents of the last 8 steps
    agent = mod.make_agent(obs_shape, action_dim, device)  # each script's defaults
    rb = mod.ReplayBuffer(args.buffer_transitions, obs_shape, action_dim, device, episode_len=episode_len)
    fill_dmc_buffer(rb, args.buffer_transitions, obs_shape, action_dim, episode_len, rng)
    nets, encoders = dmc_networks(agent)
    sac = (cfg.gamma, cfg.tau, cfg.policy_frequency, cfg.target_network_frequency)
    if joint:
        nets["decoder"] = agent.decoder
        sac += (cfg.encoder_tau, cfg.decoder_frequency, cfg.decoder_latent_lambda)

    def step(i):
        mod.update(agent, rb, i, b, *sac)

    notes = "update only; the frozen encoder encodes one frame per agent step while acting" if not joint else ""
    return Variant(name, "dmc", step, None, nets, encoders, rb, b, period=2, notes=notes)


def variant_specs(args: Args, device: torch.device) -> list[tuple[str, str, Callable[[], Variant]]]:
    """(name, algo, builder) of every variant, in table order."""
    specs = []

    def add(name, algo, fn, *a, **kw):
        specs.append((name, algo, lambda: fn(name, *a, **kw)))

    for b in args.dmc_batch_size:
        suffix = f"_b{b}" if len(args.dmc_batch_size) > 1 else ""
        add(f"sac_state{suffix}", "sac_state", build_sac, "sac_state", args, device, b)
        add(f"sac_pixels{suffix}", "sac_pixels", build_sac, "sac_pixels", args, device, b)
        for k, m in parse_km(args.km_grid):
            add(f"drq_sac_k{k}_m{m}{suffix}", "drq_sac", build_sac, "drq_sac", args, device, b, k, m)
        for mode in SAC_AE_MODES:  # sac_ae_frozen.py and sac_ae.py
            add(f"sac_ae_{mode}{suffix}", "sac_ae" if mode == "joint" else "sac_ae_frozen", build_sac_ae, mode, args,
                device, b)
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


def timed_call(fn: Callable[[int], None], i: int, device: torch.device) -> dict:
    """Wall-clock seconds of fn(i), the device synchronised around it, and the process's user and kernel CPU
    seconds and minor and major page faults during it (on a CPU shared with other work, CPU time measures the
    compute, wall time the wait; kernel time and faults show memory being mapped and unmapped)."""
    sync(device)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn(i)
    sync(device)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return {"step": i, "wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
            "minflt": r1.ru_minflt - r0.ru_minflt, "majflt": r1.ru_majflt - r0.ru_majflt}


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


def release_free_heap() -> None:
    """Hand the heap's free pages back to the kernel (glibc; a no-op elsewhere). Trimming is off in this process
    (run_utils.tune_allocator), so without this a variant would reuse memory an earlier variant freed, unseen by
    the resident set, and its peak extra would come out too small."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_memory(device: torch.device) -> float | None:
    """Reset the peak counter and return the current memory (the baseline a variant's peak is measured from)."""
    gc.collect()
    release_free_heap()
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
        aug = np.array([timed_call(lambda i: v.augment(), i, device)["wall"]
                        for i in range(max(args.repeats, 5))]) * 1e3
    peak = memory_mb(device, peak=True)
    per_update = {key: float(np.mean(vals)) for key, vals in passes.items()}
    return {
        "variant": v.name, "domain": v.domain, "device": device.type, "batch_size": v.batch_size,
        "aug_ms": float(np.median(aug)) if aug is not None else None,
        "forward_passes": per_update["fwd"], "forward_passes_unbatched": per_update["fwd_equiv"],
        "backward_passes": per_update["bwd"], "encoder_fwd_samples": per_update["enc_fwd"],
        "encoder_bwd_samples": per_update["enc_bwd"], "per_step_counts": passes,
        "flops_per_update": flops, "gflops": flops / 1e9,
        "buffer_bytes_per_transition": buffer_bytes_per_transition(v.buffer),
        "peak_memory_mb": peak - memory_before if peak is not None and memory_before is not None else None,
        "notes": v.notes,
    }


def time_interleaved(prepared: list[tuple[Variant, dict]], args: Args, device: torch.device, peak: dict) -> None:
    """Round robin: each round times one update of every variant in turn, so a change in the machine's load (a
    shared CPU) hits all variants alike instead of biasing the ones measured during it. The process's CPU time
    and page faults are therefore taken around each single update and summed per variant."""
    calls = {v.name: [] for v, _ in prepared}
    wanted = {v.name: (args.atari_repeats or args.repeats) if v.domain == "atari" else args.repeats
              for v, _ in prepared}
    for r in range(max(wanted.values(), default=0)):
        for v, _ in prepared:
            if r < wanted[v.name]:
                calls[v.name].append(timed_call(v.step, v.next_step, device))
                v.next_step += 1
    for v, row in prepared:
        c = calls[v.name]
        t = np.array([x["wall"] for x in c]) * 1e3
        n = len(c)
        per_update = {key: sum(x[key] for x in c) / n for key in ("user", "sys", "minflt", "majflt")}
        # the steps of a period differ (DMC: actor + critic, then critic only): the mean of their medians weighs
        # them as training does, where the plain median would fall between the two
        amortized = float(np.mean([np.median([x["wall"] for x in c if x["step"] % v.period == phase])
                                   for phase in range(v.period) if any(x["step"] % v.period == phase for x in c)]))
        gflops_per_s = row["gflops"] / amortized
        row.update({"median_ms": float(np.median(t)), "p25_ms": float(np.percentile(t, 25)),
                    "p75_ms": float(np.percentile(t, 75)), "mean_ms": float(t.mean()),
                    "amortized_ms": amortized * 1e3, "updates_per_s": float(1e3 / t.mean()), "repeats": n,
                    "user_ms": per_update["user"] * 1e3, "sys_ms": per_update["sys"] * 1e3,
                    "cpu_mean_ms": (per_update["user"] + per_update["sys"]) * 1e3,
                    "minflt_per_update": per_update["minflt"], "majflt_per_update": per_update["majflt"],
                    "gflops_per_s": gflops_per_s, "pct_of_kernel_peak": 100 * gflops_per_s / peak["gflops_per_s"]})


def kernel_peak(device: torch.device, batch: int, repeats: int = 5) -> dict:
    """The practical peak of this device at this thread count, the yardstick of each variant's GFLOP/s: the
    forward of the encoder's first convolution (9 -> 32 channels, stride 2, on 84x84) and of its second (32 -> 32 on
    41x41, the shape of three of its four) at `batch`, each in NCHW and in channels_last, the fastest of `repeats`
    calls; the best of the four is the peak. FLOPs are counted as for the variants."""
    from torch.utils.flop_counter import FlopCounterMode

    import drq_sac

    gen = torch.Generator().manual_seed(0)
    convs = drq_sac.Encoder((9, 84, 84)).convs
    layers = {"conv1 9->32 3x3 stride 2, 84x84 in": (convs[0], (9, 84, 84)),
              "conv2 32->32 3x3, 41x41 in": (convs[2], (32, 41, 41))}
    results = []
    for layer, (conv, shape) in layers.items():
        for fmt_name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            conv = conv.to(device, memory_format=fmt)
            x = torch.rand(batch, *shape, generator=gen).to(device).contiguous(memory_format=fmt)
            with torch.no_grad():
                with FlopCounterMode(display=False) as counter:
                    conv(x)
                best = min(timed_call(lambda i: conv(x), i, device)["wall"] for i in range(repeats))
            flops = counter.get_total_flops()
            results.append({"layer": layer, "memory_format": fmt_name, "batch": batch, "gflop": flops / 1e9,
                            "best_ms": best * 1e3, "gflops_per_s": flops / 1e9 / best})
    return {**max(results, key=lambda r: r["gflops_per_s"]), "all": results}


def add_ratios(rows: list[dict]) -> None:
    """FLOP-proportional expectation next to the measurement, both relative to the domain's baseline without
    augmentation at the same batch size (sac_pixels on DMC pixels, nddqn_atari on Atari): if DrQ's cost were only
    its extra compute, measured_cost_ratio would equal expected_cost_ratio; overhead = measured / expected."""
    base = {(r["domain"], r["batch_size"]): r for r in rows if r["algo"] in (DMC_PIXEL_BASELINE, ATARI_BASELINE)}
    for r in rows:
        b = base.get((r["domain"], r["batch_size"]))
        if b is None or not b["gflops"]:
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
         ("amortized_ms", "amortized ms", "{:.2f}"), ("updates_per_s", "upd/s", "{:.3g}"),
         ("user_ms", "user ms", "{:.0f}"), ("sys_ms", "sys ms", "{:.0f}"),
         ("minflt_per_update", "minor faults", "{:.0f}"), ("majflt_per_update", "major faults", "{:.0f}"),
         ("gflops", "GFLOP", "{:.2f}"), ("gflops_per_s", "GFLOP/s", "{:.1f}"),
         ("pct_of_kernel_peak", "% of peak", "{:.0f}"),
         ("expected_cost_ratio", "FLOP ratio", "{:.2f}"), ("measured_cost_ratio", "time ratio", "{:.2f}"),
         ("measured_cpu_ratio", "CPU-time ratio", "{:.2f}"), ("aug_ms", "aug ms", "{:.2f}"),
         ("forward_passes", "fwd", "{:g}"), ("forward_passes_unbatched", "fwd x copies", "{:g}"),
         ("backward_passes", "bwd", "{:g}"), ("encoder_fwd_samples", "enc samples", "{:g}"),
         ("buffer_bytes_per_transition", "buffer B/transition", "{:.0f}"),
         ("peak_memory_mb", "peak extra MB", "{:.0f}")]


def format_table(rows: list[dict]) -> str:
    head = [h for _, h, _ in TABLE]
    body = [[fmt.format(r[k]) if r.get(k) is not None else "—" for k, _, fmt in TABLE] for r in rows]
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


def save_chart(rows: list[dict], path: Path, title: str, peak: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 1.5 + 0.45 * len(rows)), gridspec_kw={"width_ratios": [3, 2, 2]})
    y = np.arange(len(rows))
    med = np.array([r["median_ms"] for r in rows])
    err = np.array([[r["median_ms"] - r["p25_ms"] for r in rows], [r["p75_ms"] - r["median_ms"] for r in rows]])
    colors = ["C0" if r["domain"] == "dmc" else "C1" for r in rows]
    axes[0].barh(y, med, xerr=err, color=colors, capsize=3, label="update (median, IQR)")
    aug = [r["aug_ms"] or 0 for r in rows]
    axes[0].barh(y, aug, color="k", alpha=0.35, label="augmentation alone")
    axes[0].set_yticks(y, [f"{r['variant']} (B={r['batch_size']})" for r in rows])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per update (log scale)")
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8)
    axes[0].grid(axis="x", alpha=0.3)
    exp = [r.get("expected_cost_ratio") or np.nan for r in rows]
    meas = [r.get("measured_cost_ratio") or np.nan for r in rows]
    cpu = [r.get("measured_cpu_ratio") or np.nan for r in rows]
    h = 0.27 if any(np.isfinite(cpu)) else 0.4
    axes[1].barh(y - h, exp, height=h, color="gray", label="expected (FLOPs)")
    axes[1].barh(y, meas, height=h, color=colors, label="measured (wall time)")
    if any(np.isfinite(cpu)):
        axes[1].barh(y + h, cpu, height=h, color=colors, alpha=0.5, hatch="//", label="measured (CPU time)")
    axes[1].axvline(1.0, color="k", lw=1)
    axes[1].set_yticks(y, [""] * len(rows))
    axes[1].invert_yaxis()
    axes[1].set_xlabel(f"cost relative to {DMC_PIXEL_BASELINE} (DMC) / {ATARI_BASELINE} (Atari)")
    axes[1].legend(fontsize=8)
    axes[1].grid(axis="x", alpha=0.3)
    axes[2].barh(y, [r["pct_of_kernel_peak"] for r in rows], color=colors)
    for yi, r in zip(y, rows):
        axes[2].annotate(f" {r['gflops_per_s']:.1f} GFLOP/s", (r["pct_of_kernel_peak"], yi), va="center", fontsize=7)
    axes[2].set_yticks(y, [""] * len(rows))
    axes[2].invert_yaxis()
    axes[2].set_xlim(0, 100)
    axes[2].set_xlabel(f"achieved GFLOP/s, % of the kernel peak ({peak['gflops_per_s']:.0f} GFLOP/s)")
    axes[2].grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: Args) -> dict:
    allocator_tuned = run_utils.tune_allocator()  # before the first large allocation, as in the training scripts
    if args.quick:
        args.dmc_batch_size, args.atari_batch_size = [16], 16
        args.repeats, args.warmup, args.buffer_transitions, args.atari_repeats = 2, 1, 300, None
        args.peak_batch = 32
        args.tag = args.tag or "_quick"  # never overwrite a real measurement in results/
    if min(*args.dmc_batch_size, args.atari_batch_size, args.repeats, args.buffer_transitions,
           args.atari_repeats or 1, args.peak_batch) < 1 or args.warmup < 0:
        fail("batch sizes, --repeats and --buffer-transitions must be >= 1, --warmup >= 0")
    if max(*args.dmc_batch_size, args.atari_batch_size) > args.buffer_transitions:
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
            "args": {k: v for k, v in vars(args).items()}, "allocator_tuned": allocator_tuned}
    print(f"benchmark on {meta['machine']} ({device}); {len(specs)} variants", flush=True)
    peak = meta["kernel_peak"] = kernel_peak(device, args.peak_batch)
    print(f"kernel peak: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['layer']}, {peak['memory_format']}, batch "
          f"{peak['batch']}, fastest of 5 forwards)", flush=True)
    rows, prepared = [], []
    for name, algo, build in specs:
        before = reset_peak_memory(device)
        v = build()
        row = {"algo": algo, **prepare(v, args, device, before)}
        rows.append(row)
        prepared.append((v, row))
        print(f"{name}: {row['forward_passes']:g} fwd / {row['backward_passes']:g} bwd passes, "
              f"{row['encoder_fwd_samples']:g} encoder samples, {row['gflops']:.2f} GFLOP per update", flush=True)
    print("timing: round robin, one update per variant per round ...", flush=True)
    time_interleaved(prepared, args, device, peak)
    del prepared
    add_ratios(rows)
    print(format_table(rows))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"benchmark_{device.type}{args.tag}"
    result = {"meta": meta, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    cols = [k for k, _, _ in TABLE] + ["domain", "device", "p25_ms", "p75_ms", "mean_ms", "cpu_mean_ms", "repeats",
                                         "flops_per_update", "encoder_bwd_samples", "baseline", "overhead", "notes"]
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    save_chart(rows, stem.with_suffix(".png"), f"{meta['machine']} ({device.type}) — {meta['command']}", peak)
    print(f"wrote {stem}.json, .csv, .png", flush=True)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

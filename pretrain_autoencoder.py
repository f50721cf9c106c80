"""Pretrain the SAC-AE convolutional autoencoder on frames of a DeepMind Control task, for sac_ae.py and
drq_sac.py --encoder-path (the reproduction report's setup, §2: 200k frames, 300 epochs, 50-dim features).

Frames come from a uniform random policy (the report's protocol) or from a saved actor (--policy-checkpoint, the
coverage hypothesis); they are stored once, compressed uint8, and can be reused (--dataset). The autoencoder is the
DMC scripts' encoder (identical class, so its weights load bit-for-bit) and the SAC-AE decoder, trained on the 5-bit
target with a latent L2 penalty and decoder weight decay (spec/ALGORITHMS.md §5, cited as "spec §x").
Outputs: {runs_dir}/{run_name}/encoder.pt, reconstructions.png, loss_curves.png, metrics.jsonl (train and held-out
reconstruction MSE per epoch, global_step = epoch), final.json.

    python pretrain_autoencoder.py                                           # the report: cartpole, random policy
    python pretrain_autoencoder.py --frames-per-input 3                      # SAC-AE/DrQ input: 3 stacked frames
    python pretrain_autoencoder.py --policy-checkpoint runs/<run>/model.pt   # frames of a trained policy
    python pretrain_autoencoder.py --dataset datasets/<file>.npz --epochs 50 # reuse collected frames
"""
import copy
import json
import math
import os
import random
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# dm_control picks its GL backend at import time; EGL renders headless (also on CPU through Mesa).
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # glfw complains about a missing X display although EGL does the rendering
    import shimmy
    from dm_control import suite

gym.register_envs(shimmy)


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (collection, split, initialisation, minibatch order)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """use CUDA when torch sees a GPU (falls back to the CPU); passing --cuda explicitly makes a missing GPU an error"""
    track: bool = False
    """if toggled, log metrics to Weights and Biases as well as to {runs_dir}/{run_name}/metrics.jsonl"""
    wandb_project_name: str = "drq-reproduction"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    wandb_group: str | None = None
    """the wandb group"""
    wandb_mode: Literal["online", "offline", "disabled"] = "online"
    """wandb mode: `offline` needs no network or API key"""
    runs_dir: str = "runs_ae"
    """folder that receives {runs_dir}/{run_name}/ (kept apart from the RL runs that report.py reads)"""

    # Data (report §2; spec §1.4 for the environment)
    env_id: str = "cartpole-swingup"
    """dm_control task (the report's SAC experiments are on cartpole swingup, its Figure 1)"""
    action_repeat: int | None = None
    """action repeat while collecting; default: the policy checkpoint's, else the DMC scripts' default for the task (cartpole-swingup 8, spec §1.4)"""
    episode_length: int = 1000
    """env steps before the time limit ends an episode (the DMC limit; shorten only for smoke tests)"""
    num_frames: int = 200_000
    """frames (agent steps) to collect (report §2: 200k)"""
    policy_checkpoint: str | None = None
    """model.pt of sac_state.py, sac_pixels.py or drq_sac.py --save-model whose sampled actions collect the frames (the coverage hypothesis); default: uniform random actions, the report's protocol"""
    dataset: str | None = None
    """reuse a dataset .npz written by an earlier run instead of collecting (its frames, whatever --num-frames says)"""
    dataset_dir: str = "datasets"
    """folder a newly collected dataset is written to"""

    # Autoencoder (spec §5)
    frames_per_input: Literal[1, 3] = 1
    """frames per encoder input: 1 = the report (one frame per latent; sac_ae.py stacks the latents of 8 steps), 3 = the SAC-AE paper's and DrQ's 3-frame stack"""
    epochs: int = 300
    """passes over the training split (report §2: 300)"""
    batch_size: int = 128
    """minibatch size (SAC-AE's batch, spec §5; the report gives none)"""
    encoder_lr: float = 1e-3
    """Adam learning rate of the encoder (SAC-AE encoder_lr, spec §5)"""
    decoder_lr: float = 1e-3
    """Adam learning rate of the decoder (SAC-AE decoder_lr, spec §5)"""
    decoder_latent_lambda: float = 1e-6
    """weight of the L2 penalty on the latent (SAC-AE decoder_latent_lambda, spec §5)"""
    decoder_weight_lambda: float = 1e-7
    """Adam weight decay of the decoder only (SAC-AE decoder_weight_lambda, spec §5)"""
    heldout_fraction: float = 0.1
    """share of the frames held out (the last whole episodes) for the held-out MSE"""
    eval_frames: int = 10_000
    """the per-epoch MSE is measured on at most this many held-out inputs and as many training inputs"""
    png_frames: int = 8
    """held-out inputs shown in reconstructions.png"""
    eval_encoder: str | None = None
    """encoder.pt of an earlier run to evaluate on all frames of the (collected or --dataset) data instead of training one: its reconstruction MSE on frames it was not trained on (coverage hypothesis)"""


# ---------------------------------------------------------------------------------------------------------------
# Shared blocks (identical in every training script; see CONTRIBUTING.md)


def get_device(cuda: bool) -> torch.device:
    # --cuda is on by default and falls back to the CPU; naming it explicitly makes a missing GPU an error.
    if cuda and torch.cuda.is_available():
        return torch.device("cuda")
    if cuda and "--cuda" in sys.argv[1:]:
        raise SystemExit("error: --cuda was given but torch sees no CUDA device; rerun with --no-cuda")
    return torch.device("cpu")


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunLogger:
    """The output contract: runs/{run_name}/args.json, metrics.jsonl (one JSON object per logged point, keyed by
    global_step) and final.json (written last and atomically: its presence means the run finished), mirrored
    to wandb under --track."""

    def __init__(self, args, run_name: str, algo: str):
        self.dir = Path(args.runs_dir) / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.header = {"algo": algo, "run_name": run_name, "code_version": code_version()}
        (self.dir / "args.json").write_text(json.dumps({**vars(args), **self.header}, indent=2, default=str))
        self.metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self.wandb = None
        if args.track:
            import wandb

            self.wandb = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, group=args.wandb_group,
                                    mode=args.wandb_mode, name=run_name, config={**vars(args), **self.header},
                                    dir=str(self.dir))

    def log(self, step: int, **metrics: float) -> None:
        self.metrics.write(json.dumps({"global_step": step, "time": time.time(), **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def finish(self, final: dict) -> Path:
        path = self.dir / "final.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**final, **self.header}, indent=2))
        os.replace(tmp, path)
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in final.items() if not isinstance(v, list)})
            self.wandb.finish()
        self.metrics.close()
        return path


class Progress:
    """A compact progress line (steps, SPS, recent return, ETA), printed at logging intervals only."""

    def __init__(self, total: int, start_step: int = 0):
        self.total, self.t0, self.s0 = total, time.time(), start_step

    def line(self, step: int, recent_return: float | None) -> str:
        sps = (step - self.s0) / max(time.time() - self.t0, 1e-9)
        eta = (self.total - step) / max(sps, 1e-9)
        ret = "n/a" if recent_return is None else f"{recent_return:.1f}"
        return f"step {step}/{self.total} | SPS {sps:.0f} | return {ret} | ETA {eta / 60:.1f} min"


# ---------------------------------------------------------------------------------------------------------------
# DeepMind Control environment (spec §1.4): dm_control through shimmy, action repeat, time-limit truncation,
# 84x84 RGB frames stacked 3 deep (the same block in sac_state.py, sac_pixels.py and drq_sac.py)

DMC_TASKS = [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]
# PlaNet-benchmark action repeats (spec §1.4, §6 item 3); any other task gets DEFAULT_ACTION_REPEAT, the
# Dreamer-benchmark value used there for all 15 tasks.
ACTION_REPEAT = {"cartpole-swingup": 8, "reacher-easy": 4, "cheetah-run": 4, "ball_in_cup-catch": 4,
                 "finger-spin": 2, "walker-walk": 2}
DEFAULT_ACTION_REPEAT = 2


def resolve_env_id(env_id: str) -> tuple[str, str]:
    """`cartpole-swingup`, `cartpole_swingup` or `dm_control/cartpole-swingup-v0` -> ("cartpole", "swingup")."""
    name = env_id.removeprefix("dm_control/").removesuffix("-v0")
    for domain, task in suite.ALL_TASKS:
        if name in (f"{domain}-{task}", f"{domain}_{task}"):
            return domain, task
    raise SystemExit(f"error: unknown dm_control task {env_id!r}; valid: {', '.join(DMC_TASKS)}")


def default_action_repeat(env_id: str) -> int:
    return ACTION_REPEAT.get("-".join(resolve_env_id(env_id)), DEFAULT_ACTION_REPEAT)


class DMCEnv(gym.Env):
    """One dm_control task as a gymnasium env: actions in [-1, 1] (rescaled to the task's bounds), each repeated
    `action_repeat` env steps with the rewards summed; the episode is truncated (never terminated) at
    `episode_length` env steps, the DMC time limit; info["env_steps"] counts the env steps of the last call.
    Pixels: 84x84 RGB from camera 0 (2 for quadruped), the last `frame_stack` frames stacked along the channels,
    uint8 (9, 84, 84); reset fills the stack with copies of the first frame. State: the flattened observation."""

    def __init__(self, env_id: str, seed: int, action_repeat: int, pixels: bool, frame_stack: int = 3,
                 image_size: int = 84, episode_length: int = 1000):
        domain, task = resolve_env_id(env_id)
        self.camera_id = 2 if domain == "quadruped" else 0
        self.env = gym.make(f"dm_control/{domain}-{task}-v0", render_mode="rgb_array", disable_env_checker=True,
                            render_kwargs={"height": image_size, "width": image_size, "camera_id": self.camera_id},
                            task_kwargs={"random": seed})
        self.seed, self.pixels, self.action_repeat = seed, pixels, action_repeat
        self.frame_stack, self.image_size, self.episode_length = frame_stack, image_size, episode_length
        self.fps = 1.0 / (self.env.unwrapped.control_timestep() * action_repeat)
        inner = self.env.action_space
        self.low, self.high = inner.low.astype(np.float64), inner.high.astype(np.float64)
        self.rescale = not (np.all(self.low == -1.0) and np.all(self.high == 1.0))  # the suite's are all [-1, 1]
        self.action_space = gym.spaces.Box(-1.0, 1.0, inner.shape, np.float32, seed=seed)
        if pixels:
            shape = (3 * frame_stack, image_size, image_size)
            self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        else:
            dim = sum(int(np.prod(space.shape)) for space in self.env.observation_space.values())
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.frames: list[np.ndarray] = []
        self.t = 0
        self.first_reset = True

    def observe(self, state: dict) -> np.ndarray:
        if not self.pixels:
            return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in state.values()])
        self.frames = self.frames[1:] + [self.render_frame()]
        return np.concatenate(self.frames, axis=0)

    def render_frame(self, size: int | None = None) -> np.ndarray:
        """Camera image (3, size, size) uint8; the agent's 84x84 view by default."""
        size = size or self.image_size
        frame = self.env.unwrapped.physics.render(height=size, width=size, camera_id=self.camera_id)
        return np.ascontiguousarray(frame.transpose(2, 0, 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self.first_reset:
            seed = self.seed
        self.first_reset = False
        state, info = self.env.reset(seed=seed)
        self.t = 0
        if self.pixels:
            self.frames = [self.render_frame()] * self.frame_stack
            return np.concatenate(self.frames, axis=0), info
        return self.observe(state), info

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if self.rescale:
            action = self.low + (action + 1.0) * 0.5 * (self.high - self.low)
        reward, terminated, truncated, n = 0.0, False, False, 0
        while n < self.action_repeat and not (terminated or truncated):
            state, r, terminated, truncated, info = self.env.step(action)
            reward += r
            n += 1
            self.t += 1
            # dm_control's own limit is 1000 env steps; a shorter --episode-length also truncates
            truncated = (truncated or self.t >= self.episode_length) and not terminated
        info["env_steps"] = n
        return self.observe(state), reward, terminated, truncated, info

    def close(self):
        self.env.close()


def make_env(env_id: str, seed: int, action_repeat: int, pixels: bool, frame_stack: int = 3, image_size: int = 84,
             episode_length: int = 1000) -> DMCEnv:
    env = DMCEnv(env_id, seed, action_repeat, pixels, frame_stack, image_size, episode_length)
    try:
        env.render_frame()
    except Exception as exc:  # GL backends fail with many exception types
        gl = os.environ.get("MUJOCO_GL")
        raise SystemExit(f"error: dm_control cannot render with MUJOCO_GL={gl} ({type(exc).__name__}: {exc}); "
                         "install the EGL libraries (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or "
                         "fall back to software rendering: apt-get install libosmesa6 and rerun with "
                         "MUJOCO_GL=osmesa") from None
    return env


def weight_init(m: nn.Module) -> None:
    """Spec §1.1: orthogonal init, Linear gain 1, conv gain sqrt(2) (ReLU) on the whole kernel; biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        m.bias.data.fill_(0.0)


FEATURE_DIM = 50  # spec §1.1 feature_dim


class Encoder(nn.Module):
    """Spec §1.1: pixels/255 -> four 3x3 convs with 32 filters, strides 2-1-1-1, no padding, ReLU (84 -> 35) ->
    Linear(32*35*35, 50) -> LayerNorm -> tanh. `convs` can be shared between encoders; the head cannot."""

    def __init__(self, obs_shape: tuple[int, ...], feature_dim: int = FEATURE_DIM, num_filters: int = 32):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(obs_shape[0], num_filters, 3, stride=2), nn.ReLU(),
            nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU(),
            nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU(),
            nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU(),
        )
        with torch.no_grad():
            conv_dim = self.convs(torch.zeros(1, *obs_shape)).numel()
        self.head = nn.Sequential(nn.Linear(conv_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.feature_dim = feature_dim

    def forward_conv(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(obs.float() / 255.0).flatten(1)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        # the actor's losses must not train the shared convs (spec §1.1): no graph through them at all
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_conv):
            h = self.forward_conv(obs)
        return self.head(h)


# ---------------------------------------------------------------------------------------------------------------
# SAC networks (spec §1.1)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on its own encoder; log-std squashed into [log_std_min, log_std_max]."""

    def __init__(self, encoder: nn.Module, action_dim: int, hidden_dim: int = 1024,
                 log_std_bounds: tuple[float, float] = (-10.0, 2.0)):
        super().__init__()
        self.encoder = encoder
        self.trunk = mlp(encoder.feature_dim, hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_bounds
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.trunk(self.encoder(obs, detach_conv)).chunk(2, dim=-1)
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return mu, log_std


def sample_action(mu: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor | None = None):
    """Reparameterised tanh-Gaussian sample and its log-prob summed over action dims, with the stable
    log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)) on the pre-tanh u, never an atanh (spec §1.1)."""
    if noise is None:
        noise = torch.randn_like(mu)
    u = mu + noise * log_std.exp()
    log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1, keepdim=True)
    return torch.tanh(u), log_prob


class StateEncoder(nn.Module):
    """No encoder on states: the features are the observation vector itself, so Actor, Critic and the update are
    the pixel scripts' code unchanged."""

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.feature_dim = obs_shape[0]

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        return obs.float()



@torch.no_grad()
def act(actor: Actor, obs: np.ndarray, device: torch.device, sample: bool) -> np.ndarray:
    """Acting sees raw (unaugmented) observations: a policy sample while training, tanh(mu) when evaluating."""
    mu, log_std = actor(torch.as_tensor(obs, device=device).unsqueeze(0))
    action = sample_action(mu, log_std)[0] if sample else torch.tanh(mu)
    return action[0].cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# The SAC-AE autoencoder (spec §5): decoder, 5-bit reconstruction target, loss and optimizers (the same block in
# pretrain_autoencoder.py and sac_ae.py)

RECONSTRUCTION_BITS = 5  # spec §5: utils.preprocess_obs(bits=5), after Glow (arXiv 1807.03039)


def ae_weight_init(m: nn.Module) -> None:
    """SAC-AE's init (spec §5): Linear orthogonal, bias 0; conv and deconv delta-orthogonal, i.e. all taps zero
    except the centre one, which gets an orthogonal matrix with the ReLU gain (arXiv 1806.05393)."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        m.weight.data.fill_(0.0)
        m.bias.data.fill_(0.0)
        mid = m.weight.size(2) // 2
        nn.init.orthogonal_(m.weight.data[:, :, mid, mid], nn.init.calculate_gain("relu"))


class Decoder(nn.Module):
    """SAC-AE decoder (spec §5): fc 50 -> 32x35x35 + ReLU, three 3x3 stride-1 deconvs + ReLU (35 -> 41), then a
    3x3 stride-2 deconv with output_padding 1 (41 -> 84) to the input's channels, no output activation. Its
    output lives on the scale of `reconstruction_target`, about [-0.5, 0.5]."""

    def __init__(self, out_channels: int, feature_dim: int = FEATURE_DIM, num_filters: int = 32):
        super().__init__()
        self.num_filters = num_filters
        self.fc = nn.Linear(feature_dim, num_filters * 35 * 35)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(num_filters, num_filters, 3, stride=1) for _ in range(3)])
        self.deconvs.append(nn.ConvTranspose2d(num_filters, out_channels, 3, stride=2, output_padding=1))
        self.apply(ae_weight_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(h)).view(-1, self.num_filters, 35, 35)
        for deconv in self.deconvs[:-1]:
            x = torch.relu(deconv(x))
        return self.deconvs[-1](x)


def reconstruction_target(obs: torch.Tensor, bits: int = RECONSTRUCTION_BITS, noise: bool = True,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """SAC-AE's reconstruction target (spec §5, utils.preprocess_obs): reduce uint8 pixels to `bits` bits,
    scale to [0, 1), add uniform dequantisation noise U(0, 1/2^bits), centre on 0. Only the target is quantised:
    the encoder still sees obs / 255."""
    bins = 2**bits
    x = torch.floor(obs.float() / 2 ** (8 - bits)) / bins
    if noise:
        x = x + torch.rand(x.shape, device=x.device, generator=generator) / bins
    return x - 0.5


def target_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """`reconstruction_target`'s scale mapped back to grey levels 0..255 (5-bit bin k covers [8k, 8k + 8)), so
    reconstruction errors can be reported in grey levels."""
    return (x + 0.5) * 256.0


def ae_loss(encoder: nn.Module, decoder: nn.Module, obs: torch.Tensor, latent_lambda: float,
            generator: torch.Generator | None = None):
    """SAC-AE's update_decoder loss (spec §5): MSE(decoder(h), 5-bit target) + lambda_z * mean(0.5 ||h||^2), the
    latent L2 penalty of RAE (arXiv 1903.12436). The decoder's weight decay lives in its optimizer (Adam
    weight_decay, as in SAC-AE). Returns (loss, reconstruction MSE, h)."""
    h = encoder(obs)
    rec_loss = F.mse_loss(decoder(h), reconstruction_target(obs, generator=generator))
    latent_loss = (0.5 * h.pow(2).sum(1)).mean()
    return rec_loss + latent_lambda * latent_loss, rec_loss, h


def make_ae_optimizers(encoder: nn.Module, decoder: nn.Module, encoder_lr: float = 1e-3, decoder_lr: float = 1e-3,
                       weight_lambda: float = 1e-7) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """SAC-AE (spec §5): Adam on the encoder; Adam with weight decay lambda_theta on the decoder only."""
    return (torch.optim.Adam(encoder.parameters(), lr=encoder_lr),
            torch.optim.Adam(decoder.parameters(), lr=decoder_lr, weight_decay=weight_lambda))


# ---------------------------------------------------------------------------------------------------------------
# The frame dataset: frames stored once, stacked on demand; per-epoch MSE; figures

def episode_starts(first: np.ndarray) -> np.ndarray:
    """Index of each frame's episode's first frame, from a dataset's `first` flags."""
    return np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))


def stack_frames(frames: torch.Tensor, starts: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
    """Encoder inputs for dataset indices `idx`: the last `k` frames up to each index, oldest first, along the
    channels; where the episode is younger than k its first frame is repeated (the frame stack's reset rule,
    spec §1.4). frames (N, 3, H, W) uint8 stored once; starts (N,) from `episode_starts`."""
    offsets = torch.arange(k - 1, -1, -1, device=idx.device)
    src = torch.maximum(idx[:, None] - offsets[None, :], starts[idx][:, None])
    return frames[src.reshape(-1)].reshape(len(idx), k * frames.shape[1], *frames.shape[2:])


def split_heldout(first: np.ndarray, fraction: float) -> int:
    """Index splitting a dataset into train [0, cut) and held-out [cut, N): the episode boundary nearest to a
    held-out share of `fraction`, so that no episode straddles the split (neighbouring frames of one episode are
    near-duplicates); a frame index when the data holds a single episode."""
    n = len(first)
    goal = int(round(n * (1 - fraction)))
    bounds = np.flatnonzero(first[1:]) + 1
    cut = int(bounds[np.argmin(np.abs(bounds - goal))]) if len(bounds) else goal
    return min(max(cut, 1), n - 1)


def save_dataset(path: Path, frames: np.ndarray, first: np.ndarray, **meta) -> None:
    """Compressed uint8 frames, stored once; `first` marks each episode's first frame, from which any frame stack
    is rebuilt (`stack_frames`), so one dataset serves --frames-per-input 1 and 3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, frames=frames, first=first, **{k: np.asarray(v) for k, v in meta.items()})
    os.replace(tmp, path)


def load_dataset(path: Path):
    if not path.is_file():
        raise SystemExit(f"error: --dataset {path} does not exist")
    with np.load(path) as d:
        if "frames" not in d.files or "first" not in d.files:
            raise SystemExit(f"error: --dataset {path} has no 'frames'/'first' arrays (not written by this script)")
        frames, first = d["frames"], d["first"].astype(bool)
        meta = {k: d[k].item() for k in d.files if k not in ("frames", "first")}
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3 or len(frames) != len(first):
        raise SystemExit(f"error: --dataset {path}: expected uint8 frames (N, 3, H, W), got {frames.dtype} {frames.shape}")
    return frames, first, meta


@torch.no_grad()
def evaluate_mse(encoder: nn.Module, decoder: nn.Module, frames: torch.Tensor, starts: torch.Tensor, idx: torch.Tensor,
                 k: int, seed: int, batch_size: int = 256) -> tuple[float, float]:
    """Reconstruction MSE (per pixel and channel) over the inputs at `idx`, on two scales: the training target's
    (5-bit, dequantisation noise, [-0.5, 0.5]: the loss SAC-AE minimises) and grey levels 0..255 (the output mapped
    back by `target_to_pixels`, against the original uint8 frames). The noise has a fixed seed so that epochs are
    compared on one draw."""
    gen = torch.Generator(device=frames.device).manual_seed(seed)
    sq_target = torch.zeros((), device=frames.device, dtype=torch.float64)
    sq_pixels = torch.zeros((), device=frames.device, dtype=torch.float64)
    for i in range(0, len(idx), batch_size):
        obs = stack_frames(frames, starts, idx[i: i + batch_size], k)
        rec = decoder(encoder(obs))
        sq_target += (rec - reconstruction_target(obs, generator=gen)).pow(2).sum()
        sq_pixels += (target_to_pixels(rec) - obs.float()).pow(2).sum()
    count = len(idx) * k * frames[0].numel()
    return sq_target.item() / count, sq_pixels.item() / count


def save_reconstruction_png(path: Path, encoder: nn.Module, decoder: nn.Module, obs: torch.Tensor) -> None:
    """Originals (top row) against reconstructions (bottom row): the newest frame of each input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        rec = target_to_pixels(decoder(encoder(obs))).clamp(0, 255).round().to(torch.uint8)
    n = len(obs)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for j in range(n):
        for row, img in enumerate((obs[j, -3:], rec[j, -3:])):
            axes[row, j].imshow(img.permute(1, 2, 0).cpu().numpy())
            axes[row, j].axis("off")
        axes[0, j].set_title(f"#{j}", fontsize=8)
    axes[0, 0].text(-8, 42, "original", rotation=90, va="center", ha="right", fontsize=8)
    axes[1, 0].text(-8, 42, "reconstructed", rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_loss_png(path: Path, history: list) -> None:
    """Train and held-out reconstruction MSE per epoch, in grey levels^2 (left) and on the target scale (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["ae/epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, scale, label in ((axes[0], "_255", "MSE, grey levels^2 (0..255)"), (axes[1], "", "MSE, 5-bit target scale")):
        ax.plot(epochs, [h[f"ae/train_mse{scale}"] for h in history], marker=".", label="train")
        ax.plot(epochs, [h[f"ae/heldout_mse{scale}"] for h in history], marker=".", label="held-out")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_encoder_checkpoint(path: Path, encoder: nn.Module, decoder: nn.Module, frames_per_input: int, env_id: str,
                            extra: dict) -> None:
    """The checkpoint sac_ae.py and drq_sac.py --encoder-path read: the encoder's state_dict (the DMC scripts'
    Encoder class, so its weights load bit-for-bit), the decoder's (sac_ae.py --ae-mode joint continues from it)
    and the input layout."""
    torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                "frames_per_input": frames_per_input, "feature_dim": FEATURE_DIM, "env_id": env_id, **extra}, path)


# ---------------------------------------------------------------------------------------------------------------
# Collection and training


def load_policy(path: str, device: torch.device) -> tuple[Actor, dict, bool]:
    """The actor of a sac_state.py / sac_pixels.py / drq_sac.py model.pt (their save_checkpoint format: state
    dicts plus the run's args) and whether it acts on pixels (its state dict holds an encoder) or on states."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        state, saved = ckpt["actor"], ckpt["args"]
    except Exception as exc:  # a wrong file fails in many ways
        raise SystemExit(f"error: --policy-checkpoint {path} is not a model.pt of sac_state.py, sac_pixels.py or "
                         f"drq_sac.py --save-model ({type(exc).__name__}: {exc})") from None
    if any(key.startswith("encoder.encoder.") for key in state):
        raise SystemExit(f"error: --policy-checkpoint {path} acts on a pretrained encoder (drq_sac.py --encoder-path); "
                         "collect with an end-to-end sac_state.py, sac_pixels.py or drq_sac.py policy")
    pixels = any(key.startswith("encoder.convs.") for key in state)
    if pixels:
        encoder = Encoder((state["encoder.convs.0.weight"].shape[1], 84, 84), saved.get("feature_dim", FEATURE_DIM))
    else:
        encoder = StateEncoder((state["trunk.0.weight"].shape[1],))
    actor = Actor(encoder, state["trunk.4.weight"].shape[0] // 2, saved["hidden_dim"]).to(device)
    actor.load_state_dict(state)
    return actor, saved, pixels


def collect_frames(env_id: str, num_frames: int, seed: int, action_repeat: int, episode_length: int,
                   actor: Actor | None, pixels: bool, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The agent's 84x84 RGB view at each of `num_frames` agent steps, (N, 3, 84, 84) uint8, and `first` (N,),
    True at each episode's first frame. Actions: uniform in [-1, 1] without an actor, else the actor's samples
    (as during its training). A state actor acts on states while the same camera renders the frames."""
    env = make_env(env_id, seed, action_repeat, pixels=pixels or actor is None, episode_length=episode_length)
    frames = np.empty((num_frames, 3, env.image_size, env.image_size), dtype=np.uint8)
    first = np.zeros(num_frames, dtype=bool)
    obs, _ = env.reset(seed=seed)
    new_episode, progress = True, Progress(num_frames)
    for i in range(num_frames):
        if i > 0 and i % max(num_frames // 10, 1) == 0:
            print("collecting: " + progress.line(i, None).replace(" | return n/a", ""), flush=True)
        frames[i] = obs[-3:] if env.pixels else env.render_frame()
        first[i] = new_episode
        action = env.action_space.sample() if actor is None else act(actor, obs, device, sample=True)
        obs, _, terminated, truncated, _ = env.step(action)
        new_episode = terminated or truncated
        if new_episode:
            obs, _ = env.reset()
    env.close()
    return frames, first


def main(args: Args) -> dict:
    """Collect (or load) frames, train the autoencoder, write the encoder checkpoint and figures; returns final."""
    t_start = time.time()
    if args.epochs < 1 or args.batch_size < 1 or args.num_frames < 2:
        raise SystemExit("error: --epochs and --batch-size must be >= 1 and --num-frames >= 2")
    if not 0.0 < args.heldout_fraction < 1.0:
        raise SystemExit(f"error: --heldout-fraction must lie in (0, 1), got {args.heldout_fraction}")
    if args.action_repeat is not None and args.action_repeat < 1:
        raise SystemExit(f"error: --action-repeat must be >= 1, got {args.action_repeat}")
    if args.policy_checkpoint is not None and not Path(args.policy_checkpoint).is_file():
        raise SystemExit(f"error: --policy-checkpoint {args.policy_checkpoint} does not exist")
    if args.eval_encoder is not None and not Path(args.eval_encoder).is_file():
        raise SystemExit(f"error: --eval-encoder {args.eval_encoder} does not exist")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = get_device(args.cuda)
    dataset = None if args.dataset is None else load_dataset(Path(args.dataset))
    if dataset is not None:
        env_name = str(dataset[2].get("env_id", args.env_id))
    else:
        env_name = "-".join(resolve_env_id(args.env_id))
    actor, saved, pixels = None, {}, True
    if dataset is None and args.policy_checkpoint is not None:
        actor, saved, pixels = load_policy(args.policy_checkpoint, device)
        env_name = "-".join(resolve_env_id(saved["env_id"]))
    n_frames = len(dataset[0]) if dataset is not None else args.num_frames
    n_train = n_frames - max(int(round(n_frames * args.heldout_fraction)), 1)
    if args.batch_size > n_train and args.eval_encoder is None:
        raise SystemExit(f"error: --batch-size {args.batch_size} is larger than the training split (~{n_train} frames)")

    run_name = f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    logger = RunLogger(args, run_name, algo=args.exp_name)
    if dataset is None:
        action_repeat = args.action_repeat or saved.get("action_repeat") or default_action_repeat(env_name)
        policy = "random" if actor is None else f"policy-{Path(args.policy_checkpoint).parent.name}"
        print(f"collecting {args.num_frames} frames of {env_name} (action repeat {action_repeat}, {policy} actions)",
              flush=True)
        frames, first = collect_frames(env_name, args.num_frames, args.seed, action_repeat, args.episode_length,
                                       actor, pixels, device)
        path = Path(args.dataset_dir) / f"{env_name}__{policy}__{args.num_frames}__{args.seed}.npz"
        save_dataset(path, frames, first, env_id=env_name, policy=policy, action_repeat=action_repeat,
                     seed=args.seed)
        print(f"dataset: {len(frames)} frames, {int(first.sum())} episodes -> {path}", flush=True)
    else:
        (frames, first, meta), path = dataset, Path(args.dataset)
        print(f"dataset: {len(frames)} frames, {int(first.sum())} episodes <- {path} {meta}", flush=True)

    frames_t = torch.as_tensor(frames, device=device)
    starts_t = torch.as_tensor(episode_starts(first), device=device)
    if args.eval_encoder is not None:  # measure a trained autoencoder on these frames, train nothing
        try:
            ckpt = torch.load(args.eval_encoder, map_location=device, weights_only=False)
            k = ckpt["frames_per_input"]
            encoder, decoder = Encoder((3 * k, *frames.shape[2:])).to(device), Decoder(3 * k).to(device)
            encoder.load_state_dict(ckpt["encoder"])
            decoder.load_state_dict(ckpt["decoder"])
        except Exception as exc:  # a wrong file fails in many ways
            raise SystemExit(f"error: --eval-encoder {args.eval_encoder} is not an encoder.pt of this script "
                             f"({type(exc).__name__}: {exc})") from None
        idx = torch.arange(len(frames), device=device)
        mse, mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, idx, k, args.seed)
        logger.log(0, **{"ae/eval_mse": mse, "ae/eval_mse_255": mse_255})
        save_reconstruction_png(logger.dir / "reconstructions.png", encoder, decoder,
                                stack_frames(frames_t, starts_t, idx[: args.png_frames], k))
        final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "epochs": 0, "frames_per_input": k,
                 "num_frames": len(frames), "dataset": str(path), "evaluated_encoder": args.eval_encoder,
                 "eval_mse": mse, "eval_mse_255": mse_255, "wall_time_s": time.time() - t_start, "run_name": run_name}
        logger.finish(final)
        print(f"{args.eval_encoder} on {path}: MSE {mse:.3e} ({mse_255:.2f} grey levels^2)", flush=True)
        return final

    k = args.frames_per_input
    cut = split_heldout(first, args.heldout_fraction)
    heldout_idx = torch.arange(cut, len(frames), device=device)[: args.eval_frames]
    rng = np.random.default_rng(args.seed)
    train_eval_idx = torch.as_tensor(np.sort(rng.choice(cut, size=min(cut, len(heldout_idx)), replace=False)),
                                     device=device)

    # the DMC scripts' encoder with SAC-AE's initialisation, and the SAC-AE decoder (spec §5)
    encoder = Encoder((3 * k, *frames.shape[2:])).to(device)
    encoder.apply(ae_weight_init)
    decoder = Decoder(3 * k).to(device)
    encoder_optimizer, decoder_optimizer = make_ae_optimizers(encoder, decoder, args.encoder_lr, args.decoder_lr,
                                                              args.decoder_weight_lambda)
    history, progress = [], Progress(args.epochs)
    n_batches = cut // args.batch_size  # the ragged last batch is dropped
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(cut, device=device)
        running = torch.zeros((), device=device)
        for b in range(n_batches):
            obs = stack_frames(frames_t, starts_t, perm[b * args.batch_size: (b + 1) * args.batch_size], k)
            loss, rec_loss, _ = ae_loss(encoder, decoder, obs, args.decoder_latent_lambda)
            encoder_optimizer.zero_grad(set_to_none=True)
            decoder_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            encoder_optimizer.step()
            decoder_optimizer.step()
            running += rec_loss.detach()
        train_mse, train_mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, train_eval_idx, k, args.seed)
        heldout_mse, heldout_mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, heldout_idx, k, args.seed)
        point = {"ae/epoch": epoch, "ae/train_loss": running.item() / n_batches, "ae/train_mse": train_mse,
                 "ae/heldout_mse": heldout_mse, "ae/train_mse_255": train_mse_255,
                 "ae/heldout_mse_255": heldout_mse_255}
        history.append(point)
        logger.log(epoch, **point)
        eta = progress.line(epoch, None).rsplit(" | ", 1)[1]
        print(f"epoch {epoch}/{args.epochs} | MSE train {train_mse:.3e} held-out {heldout_mse:.3e} | grey levels^2 "
              f"train {train_mse_255:.2f} held-out {heldout_mse_255:.2f} | {eta}", flush=True)

    encoder_path = logger.dir / "encoder.pt"
    save_encoder_checkpoint(encoder_path, encoder, decoder, k, env_name,
                            {"dataset": str(path), "epochs": args.epochs, "run_name": run_name})
    save_reconstruction_png(logger.dir / "reconstructions.png", encoder, decoder,
                            stack_frames(frames_t, starts_t, heldout_idx[: args.png_frames], k))
    save_loss_png(logger.dir / "loss_curves.png", history)
    final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "epochs": args.epochs,
             "frames_per_input": k, "num_frames": len(frames), "train_frames": cut, "heldout_frames": len(frames) - cut,
             "dataset": str(path), "encoder_path": str(encoder_path),
             **{key.removeprefix("ae/"): value for key, value in history[-1].items() if key != "ae/epoch"},
             "wall_time_s": time.time() - t_start, "run_name": run_name}
    logger.finish(final)
    print(f"encoder -> {encoder_path}", flush=True)
    return final


if __name__ == "__main__":
    main(tyro.cli(Args))

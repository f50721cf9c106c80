"""SAC+AE on DeepMind Control: SAC on a pretrained autoencoder's features (the reproduction report's setup) or the
SAC+AE algorithm of Yarats et al., whose encoder the critic and the reconstruction loss train together.

--ae-mode frozen (default, report §2): the encoder of pretrain_autoencoder.py (--encoder-path) is frozen; each agent
step's frame is encoded once and the observation is the latents of the last --latent-stack (8) steps, concatenated;
SAC learns on that vector with sac_state.py's networks and constants. --ae-mode joint (spec §5 of
spec/ALGORITHMS.md, cited as "spec §x"): SAC on 3 stacked frames as in sac_pixels.py plus the SAC-AE
decoder; the critic loss and the reconstruction loss both train the encoder, with SAC-AE's encoder tau, temperature
lr and betas, batch, capacity and burst of updates when learning starts. `diff sac_pixels.py sac_ae.py` shows only
what SAC+AE changes. Steps users see (flags, x-axes, final.json) are environment steps = agent steps x action repeat.

    python sac_ae.py --encoder-path runs_ae/<run>/encoder.pt                   # the report's SAC+AE (frozen)
    python sac_ae.py --ae-mode joint                                           # SAC+AE of Yarats et al.
    python sac_ae.py --ae-mode joint --encoder-path runs_ae/<run>/encoder.pt   # joint, from the pretrained AE
    python sac_ae.py --eval-checkpoint runs/<run>/model.pt                     # evaluate a saved model only
    python sac_ae.py --resume runs/<run>                                       # continue an interrupted run
"""
import copy
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import dmc_envs
import run_utils



@dataclass
class Args(run_utils.RunArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, python and the environment)"""
    capture_video: bool = False
    """if toggled, record the first episode of every evaluation to runs/{run_name}/videos"""
    save_model: bool = False
    """if toggled, save the agent (networks, decoder, optimizers, temperature) and, frozen, the pretrained encoder to runs/{run_name}/model.pt"""
    eval_checkpoint: str | None = None
    """path of a model.pt or checkpoint.pt to load and evaluate (its env id, action repeat and frozen encoder); no training happens"""
    checkpoint_interval: int = 10_000
    """env steps between full-state checkpoints (networks, decoder, optimizers, replay, RNG and env state) in runs/{run_name}/checkpoint.pt; SIGINT/SIGTERM also write one"""

    # Environment (spec §1.4, §6 items 3 and 5)
    env_id: str = "cartpole-swingup"
    """dm_control task: `cartpole-swingup` or `dm_control/cartpole-swingup-v0`"""
    action_repeat: int | None = None
    """agent actions are repeated this many env steps, rewards summed; default: the PlaNet-benchmark value of the task (cartpole-swingup 8, reacher-easy/cheetah-run/ball_in_cup-catch 4, finger-spin/walker-walk 2), 2 for other tasks (the Dreamer-benchmark value) (spec §1.4)"""
    episode_length: int = 1000
    """env steps before the time limit truncates an episode (bootstrapped through, spec §6 item 5); the DMC limit is 1000, shorten only for smoke tests"""

    # Algorithm (spec §1.2, §1.4, §6 items 4 and 7)
    total_timesteps: int = 500_000
    """env steps of training (the paper reports 100k and 500k)"""
    buffer_size: int | None = None
    """replay capacity in transitions (agent steps); default: 100k frozen (sac_state.py, spec §1.4), 1M joint (SAC-AE, spec §5)"""
    batch_size: int | None = None
    """minibatch size; default: 512 frozen (sac_state.py, spec §1.4), 128 joint (SAC-AE, spec §5)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before the first update; default: 1000 agent steps x action repeat (spec §1.4 num_seed_steps)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.01
    """soft-update rate of the target Q heads (spec §1.1; SAC-AE critic_tau, spec §5); the encoder has --encoder-tau"""
    policy_lr: float = 1e-3
    """Adam learning rate of the actor (spec §1.4)"""
    q_lr: float = 1e-3
    """Adam learning rate of the critic, its encoder included (spec §1.4)"""
    alpha_lr: float | None = None
    """Adam learning rate of log(alpha); default: 1e-3 frozen (spec §1.4), 1e-4 joint (SAC-AE, spec §5)"""
    alpha_beta: float | None = None
    """Adam beta1 of log(alpha); default: 0.9 frozen (Adam's default, spec §1.4), 0.5 joint (SAC-AE, spec §5)"""
    init_temperature: float = 0.1
    """initial entropy temperature alpha (spec §1.4)"""
    policy_frequency: int = 2
    """agent steps between actor and temperature updates (spec §1.4 actor_update_frequency)"""
    target_network_frequency: int = 2
    """agent steps between target-critic soft updates (spec §1.4 critic_target_update_frequency)"""
    hidden_dim: int = 1024
    """width of the two hidden layers of actor and Q MLPs (spec §1.1)"""
    feature_dim: int = 50
    """encoder output size (spec §1.1)"""

    # Autoencoder (report §2, spec §5)
    ae_mode: Literal["frozen", "joint"] = "frozen"
    """frozen: SAC on the pretrained encoder's features, the encoder never changes (the report); joint: SAC+AE of Yarats et al., the critic and reconstruction losses both train the encoder every step (spec §5)"""
    encoder_path: str | None = None
    """encoder.pt of pretrain_autoencoder.py: required by frozen; joint starts its encoder (both heads) and decoder from it instead of SAC-AE's initialisation"""
    latent_stack: int | None = None
    """frozen: the observation is the latents of the last N agent steps, concatenated; default: 8 frozen (report §2), 1 joint (joint encodes the frame stack once, as SAC-AE)"""
    frames_per_input: int | None = None
    """frames per encoder input: the encoder checkpoint's (1 = report, 3 = SAC-AE); without a checkpoint (joint) default 3 (spec §5 frame_stack)"""
    encoder_tau: float = 0.05
    """joint: soft-update rate of the target critic's encoder (SAC-AE encoder_tau, spec §5)"""
    encoder_lr: float = 1e-3
    """joint: Adam learning rate of the encoder under the reconstruction loss (SAC-AE encoder_lr, spec §5)"""
    decoder_lr: float = 1e-3
    """joint: Adam learning rate of the decoder (SAC-AE decoder_lr, spec §5)"""
    decoder_latent_lambda: float = 1e-6
    """joint: weight of the L2 penalty on the latent (SAC-AE decoder_latent_lambda, spec §5)"""
    decoder_weight_lambda: float = 1e-7
    """joint: Adam weight decay of the decoder (SAC-AE decoder_weight_lambda, spec §5)"""
    decoder_frequency: int = 1
    """joint: agent steps between autoencoder updates (SAC-AE decoder_update_freq, spec §5)"""

    # Evaluation (spec §1.4)
    eval_frequency: int = 10_000
    """env steps between evaluations (the paper's 10k); one also runs at step 0 and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, deterministic action tanh(mu)"""


# ---------------------------------------------------------------------------------------------------------------
# Augmentation (spec §1.3): only the invariance measurement of joint mode shifts


def random_shift(x: torch.Tensor, pad: int = 4, shift: torch.Tensor | None = None) -> torch.Tensor:
    """DrQ's random shift (spec §1.3): replicate-pad by `pad`, then crop back to the input size at a random
    offset, i.e. an integer translation in [-pad, pad] per sample and axis, shared by all channels (the stacked
    frames) of a sample. Replicate padding equals clamping the source index, so one gather does it exactly on
    any dtype, with no padded copy. `shift` (n, 2) of (dy, dx) overrides the random draw (tests)."""
    n, c, h, w = x.shape
    if shift is None:
        shift = torch.randint(-pad, pad + 1, (n, 2), device=x.device)
    rows = (torch.arange(h, device=x.device) + shift[:, :1]).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device) + shift[:, 1:]).clamp(0, w - 1)
    # one gather over the flattened image: a quarter of the time of a row gather then a column gather
    idx = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)


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
    Linear(32*35*35, 50) -> LayerNorm -> tanh. `convs` can be shared between encoders; the head cannot.
    `channels_last` runs the convs in that memory layout: the same arithmetic, summed in another order; flatten
    reads the result in NCHW order, so the head's weights are the same in both layouts."""

    def __init__(self, obs_shape: tuple[int, ...], feature_dim: int = FEATURE_DIM, num_filters: int = 32,
                 channels_last: bool = False):
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
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward_conv(self, obs: torch.Tensor) -> torch.Tensor:
        # the layout changes on the uint8 frames (a byte a value, not four); the convs keep their input's layout
        return self.convs(obs.contiguous(memory_format=self.memory_format).float() / 255.0).flatten(1)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        # the actor's losses must not train the shared convs (spec §1.1): no graph through them at all
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_conv):
            h = self.forward_conv(obs)
        return self.head(h)


class StateEncoder(nn.Module):
    """No encoder on states: the features are the observation vector itself, so Actor, Critic and the update are
    the pixel scripts' code unchanged."""

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.feature_dim = obs_shape[0]

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        return obs.float()


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
# The frozen pretrained encoder (report §2): the latents of the last N steps are the observation


def load_encoder_checkpoint(path: str) -> dict:
    """pretrain_autoencoder.py's encoder.pt, read on the CPU with weights_only=True (a file from elsewhere cannot
    run code) and checked early: a bad file is a one-line error."""
    run_utils.require(Path(path).is_file(), f"--encoder-path {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        Encoder((3 * ckpt["frames_per_input"], 84, 84), ckpt["feature_dim"]).load_state_dict(ckpt["encoder"])
    except Exception as exc:  # a wrong file fails in many ways
        run_utils.fail(f"--encoder-path {path} is not an encoder.pt of pretrain_autoencoder.py "
                       f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})")
    return ckpt


def frozen_encoder(state_dict: dict, frames_per_input: int, device: torch.device) -> Encoder:
    """The pretrained weights in this file's Encoder class (the DMC scripts' class, so they load bit-for-bit), with
    gradients off: no optimizer ever holds them."""
    encoder = Encoder((3 * frames_per_input, 84, 84), state_dict["head.0.weight"].shape[0]).to(device)
    encoder.load_state_dict(state_dict)
    return encoder.requires_grad_(False).eval()


class LatentStackEnv(gym.Wrapper):
    """Frozen-encoder observations (report §2): each agent step's newest `frames_per_input` frames go through the
    frozen encoder once, and the observation is the latents of the last `n` steps, oldest first, concatenated
    (n x 50 floats). Reset fills the stack with copies of the first latent, as the frame stack is filled with the
    first frame, so no latent of an earlier episode enters. As the encoder never changes, storing these vectors
    equals re-encoding replayed frames, at one encoder pass per step instead of n per sampled transition."""

    def __init__(self, env: dmc_envs.DMCEnv, encoder: Encoder, n: int, frames_per_input: int, device: torch.device):
        super().__init__(env)
        self.encoder, self.n, self.k, self.device = encoder, n, frames_per_input, device
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (n * encoder.feature_dim,), np.float32)
        self.fps, self.render_frame = env.fps, env.render_frame
        self.latents: list[np.ndarray] = []

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder(torch.as_tensor(pixels[-3 * self.k:], device=self.device).unsqueeze(0))[0].cpu().numpy()

    def reset(self, **kwargs):
        pixels, info = self.env.reset(**kwargs)
        self.latents = [self.encode(pixels)] * self.n
        return np.concatenate(self.latents), info

    def step(self, action: np.ndarray):
        pixels, reward, terminated, truncated, info = self.env.step(action)
        self.latents = self.latents[1:] + [self.encode(pixels)]
        return np.concatenate(self.latents), reward, terminated, truncated, info

    def snapshot(self) -> dict:
        # the replay in dmc_envs.DMCEnv.restore returns only the newest frame, so the older latents travel as they are
        return run_utils.plain({"env": self.env.snapshot(), "latents": list(self.latents)})

    def restore(self, snap: dict) -> np.ndarray | None:
        obs = self.env.restore(snap["env"])
        self.latents = [latent.numpy() for latent in snap["latents"]]
        return None if obs is None else np.concatenate(self.latents)


def resolve_ae_args(args: Args, pretrained: dict | None = None) -> tuple[Args, dict | None]:
    """Fill the mode-dependent defaults (frozen: sac_state.py's and the report's; joint: SAC-AE's, spec §5) and
    read --encoder-path (unless `pretrained`, the copy a resumed run's checkpoint carries, is given); bad
    combinations are one-line errors before any long work."""
    joint = args.ae_mode == "joint"
    if pretrained is None and args.encoder_path is not None:
        pretrained = load_encoder_checkpoint(args.encoder_path)
    run_utils.require(joint or pretrained is not None,
                      "--ae-mode frozen needs --encoder-path (an encoder.pt of pretrain_autoencoder.py)")
    k = pretrained["frames_per_input"] if pretrained else (args.frames_per_input or 3)
    run_utils.require(args.frames_per_input in (None, k),
                      f"--frames-per-input {args.frames_per_input} differs from the encoder checkpoint's {k}")
    if pretrained:
        run_utils.require(pretrained["feature_dim"] == args.feature_dim, f"--feature-dim {args.feature_dim} differs "
                          f"from the encoder checkpoint's {pretrained['feature_dim']}")

    def pick(value, frozen, joint_value):
        return value if value is not None else (joint_value if joint else frozen)

    args = replace(args, buffer_size=pick(args.buffer_size, 100_000, 1_000_000),
                   batch_size=pick(args.batch_size, 512, 128), alpha_lr=pick(args.alpha_lr, 1e-3, 1e-4),
                   alpha_beta=pick(args.alpha_beta, 0.9, 0.5), latent_stack=pick(args.latent_stack, 8, 1),
                   frames_per_input=k)
    run_utils.require(args.latent_stack >= 1 and (not joint or args.latent_stack == 1),
                      f"--latent-stack must be >= 1 (and 1 with --ae-mode joint, which encodes the frame stack once "
                      f"as SAC-AE does), got {args.latent_stack}")
    return args, pretrained


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


class Critic(nn.Module):
    """Two Q MLPs on one encoder (spec §1.1)."""

    def __init__(self, encoder: nn.Module, action_dim: int, hidden_dim: int = 1024):
        super().__init__()
        self.encoder = encoder
        self.q1 = mlp(encoder.feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(encoder.feature_dim + action_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_conv: bool = False):
        h = torch.cat([self.encoder(obs, detach_conv), action], dim=-1)
        return self.q1(h), self.q2(h)


@dataclass
class Agent:
    actor: Actor
    critic: Critic
    critic_target: Critic
    log_alpha: torch.Tensor
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    alpha_optimizer: torch.optim.Optimizer
    target_entropy: float
    decoder: Decoder | None = None  # joint only, with the two autoencoder optimizers
    encoder_optimizer: torch.optim.Optimizer | None = None
    decoder_optimizer: torch.optim.Optimizer | None = None


def make_agent(obs_shape: tuple[int, ...], action_dim: int, device: torch.device, hidden_dim: int = 1024,
               feature_dim: int = FEATURE_DIM, policy_lr: float = 1e-3, q_lr: float = 1e-3, alpha_lr: float = 1e-3,
               init_temperature: float = 0.1, joint: bool = False, alpha_beta: float = 0.9, encoder_lr: float = 1e-3,
               decoder_lr: float = 1e-3, decoder_weight_lambda: float = 1e-7, pretrained: dict | None = None) -> Agent:
    """frozen: the observation already is the latent stack, so actor and critic are MLPs on it (sac_state.py's
    StateEncoder) and no optimizer can reach the encoder. joint: sac_pixels.py's networks with SAC-AE's
    initialisation (spec §5) or the pretrained encoder and decoder, plus the decoder and the autoencoder optimizers."""
    if not joint:
        actor = Actor(StateEncoder(obs_shape), action_dim, hidden_dim).to(device)
        critic = Critic(StateEncoder(obs_shape), action_dim, hidden_dim).to(device)
    else:
        actor = Actor(Encoder(obs_shape, feature_dim), action_dim, hidden_dim).to(device)
        critic = Critic(Encoder(obs_shape, feature_dim), action_dim, hidden_dim).to(device)
        actor.apply(ae_weight_init)
        critic.apply(ae_weight_init)
        if pretrained is not None:  # both heads start from the pretrained head
            actor.encoder.load_state_dict(pretrained["encoder"])
            critic.encoder.load_state_dict(pretrained["encoder"])
        # Tie after init (spec §1.1): the actor's convs become the critic's Parameters, the heads stay separate.
        actor.encoder.convs = critic.encoder.convs
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.tensor(math.log(init_temperature), device=device, requires_grad=True)
    # The convs learn from the critic loss only, so the actor's optimizer does not hold them.
    actor_params = [p for name, p in actor.named_parameters() if not name.startswith("encoder.convs.")]
    agent = Agent(actor, critic, critic_target, log_alpha,
                  torch.optim.Adam(actor_params, lr=policy_lr),
                  torch.optim.Adam(critic.parameters(), lr=q_lr),
                  torch.optim.Adam([log_alpha], lr=alpha_lr, betas=(alpha_beta, 0.999)),
                  target_entropy=-float(action_dim))
    if joint:
        agent.decoder = Decoder(obs_shape[0], feature_dim).to(device)
        if pretrained is not None:
            agent.decoder.load_state_dict(pretrained["decoder"])
        agent.encoder_optimizer, agent.decoder_optimizer = make_ae_optimizers(
            critic.encoder, agent.decoder, encoder_lr, decoder_lr, decoder_weight_lambda)
    return agent


# ---------------------------------------------------------------------------------------------------------------
# Replay buffer: every RGB frame stored once, on the training device


class ReplayBuffer:
    """Transitions of frame-stacked pixel observations with each RGB frame stored once (100k transitions take
    ~2.1 GB instead of 12.7 GB for stacked obs and next obs). Transition i keeps the slots of its frame_stack + 1
    frames (oldest first): obs = frames 0..S-1, next obs = frames 1..S, assembled at sample time by one gather.
    An episode's first frame is stored once and referenced frame_stack times (the env's reset copies it). The
    frame ring holds `capacity` frames plus one per episode of `episode_len` agent steps; a transition whose
    oldest frame was overwritten (only with shorter episodes) is never sampled. On the frozen encoder a "frame" is
    one step's latent (50 floats) and an observation the latents of the last S steps, stored the same way."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_dim: int, device: torch.device,
                 episode_len: int = 1):
        self.capacity, self.device = capacity, device
        pixels = len(obs_shape) == 3
        self.frame_shape = (3, *obs_shape[1:]) if pixels else (FEATURE_DIM,)
        self.stack = obs_shape[0] // self.frame_shape[0]
        self.num_frames = capacity + math.ceil(capacity / max(episode_len, 1)) + self.stack + 1
        self.frames = torch.empty((self.num_frames, *self.frame_shape), dtype=torch.uint8 if pixels else torch.float32,
                                  device=device)
        self.frame_idx = torch.zeros((capacity, self.stack + 1), dtype=torch.long, device=device)
        self.actions = torch.zeros((capacity, action_dim), dtype=torch.float32, device=device)
        self.rewards = torch.zeros((capacity, 1), dtype=torch.float32, device=device)
        self.not_dones = torch.zeros((capacity, 1), dtype=torch.float32, device=device)
        self.oldest_frame = np.zeros(capacity, dtype=np.int64)  # global frame number of each transition's frame 0
        self.frames_written = 0  # global frame counter
        self.added = 0  # global transition counter
        self.start = 0  # global number of the oldest sampleable transition
        self.current: list[int] | None = None  # global frame numbers of the current obs stack

    def write_frame(self, frame: np.ndarray) -> int:
        self.frames[self.frames_written % self.num_frames] = torch.as_tensor(frame, device=self.device)
        self.frames_written += 1
        return self.frames_written - 1

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, not_done: float,
            done: bool) -> None:
        """not_done: 0 only on a true termination (the bootstrap mask); done: the episode ended (terminated or
        truncated), so the next add starts a new episode."""
        if self.current is None:
            self.current = [self.write_frame(obs[-self.frame_shape[0]:])] * self.stack
        frames = self.current + [self.write_frame(next_obs[-self.frame_shape[0]:])]
        i = self.added % self.capacity
        self.frame_idx[i] = torch.as_tensor(frames, device=self.device) % self.num_frames
        self.actions[i] = torch.as_tensor(action, device=self.device)
        self.rewards[i] = float(reward)
        self.not_dones[i] = float(not_done)
        self.oldest_frame[i] = frames[0]
        self.added += 1
        self.current = None if done else frames[1:]
        alive = self.frames_written - self.num_frames  # frames numbered below this are overwritten
        self.start = max(self.start, self.added - self.capacity)
        while self.start < self.added and self.oldest_frame[self.start % self.capacity] < alive:
            self.start += 1

    def __len__(self) -> int:
        return self.added - self.start

    def get(self, idx: torch.Tensor):
        """obs, action, reward, next_obs, not_done of buffer slots `idx`, obs stacks (n, 3*S, H, W) uint8 or latent
        stacks (n, 50*S)."""
        frames = self.frames[self.frame_idx[idx]]  # (n, S+1, *frame_shape)
        obs = frames[:, :-1].flatten(1, 2)
        next_obs = frames[:, 1:].flatten(1, 2)
        return obs, self.actions[idx], self.rewards[idx], next_obs, self.not_dones[idx]

    def sample(self, batch_size: int):
        # uniform with replacement over the sampleable transitions, as the authors' replay_buffer.sample
        idx = (self.start + torch.randint(0, len(self), (batch_size,), device=self.device)) % self.capacity
        return self.get(idx)

    def state_dict(self) -> dict:
        """What a checkpoint needs: the written part of each array (uint8 frames or latents as stored) and the
        counters."""
        n, f = min(self.added, self.capacity), min(self.frames_written, self.num_frames)
        return {"frames": self.frames[:f], "frame_idx": self.frame_idx[:n], "actions": self.actions[:n],
                "rewards": self.rewards[:n], "not_dones": self.not_dones[:n],
                "oldest_frame": torch.from_numpy(self.oldest_frame[:n].copy()), "frames_written": self.frames_written,
                "added": self.added, "start": self.start, "current": self.current}

    def load_state_dict(self, state: dict) -> None:
        n, f = len(state["actions"]), len(state["frames"])
        for name in ["frames", "frame_idx", "actions", "rewards", "not_dones"]:
            getattr(self, name)[: n if name != "frames" else f] = state[name]
        self.oldest_frame[:n] = state["oldest_frame"].numpy()
        self.frames_written, self.added, self.start, self.current = (state["frames_written"], state["added"],
                                                                      state["start"], state["current"])


# ---------------------------------------------------------------------------------------------------------------
# The SAC update (spec §1.2 with K = M = 1 and no augmentation) and SAC-AE's autoencoder step (spec §5)


def td_target(actor: Actor, critic_target: Critic, alpha: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor,
              not_done: torch.Tensor, gamma: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The soft Q target r + gamma * not_done * (min target Q - alpha log pi) at a sampled next action (spec §1.2).
    `noise` (B, |A|) fixes the action samples (tests)."""
    with torch.no_grad():
        mu, log_std = actor(next_obs)
        next_action, log_prob = sample_action(mu, log_std, noise)
        target_q1, target_q2 = critic_target(next_obs, next_action)
        target_v = torch.min(target_q1, target_q2) - alpha.detach() * log_prob
        return reward + not_done * gamma * target_v


def critic_loss(critic: Critic, obs: torch.Tensor, action: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE of both Q heads against the target, summed over the heads as the authors' code does."""
    q1, q2 = critic(obs, action)
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    return loss, q1


def update_critic(agent: Agent, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
                  not_done: torch.Tensor, gamma: float) -> dict:
    target = td_target(agent.actor, agent.critic_target, agent.log_alpha.exp(), next_obs, reward, not_done, gamma)
    loss, q1 = critic_loss(agent.critic, obs, action, target)
    agent.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    agent.critic_optimizer.step()
    return {"losses/critic_loss": loss.detach(), "losses/q": q1.detach().mean()}


def update_actor_and_alpha(agent: Agent, obs: torch.Tensor) -> dict:
    """Actor and temperature losses on the states; actor and critic run on detached
    conv features, so only the actor's own head and MLP learn here (spec §1.1, §1.2)."""
    mu, log_std = agent.actor(obs, detach_conv=True)
    action, log_prob = sample_action(mu, log_std)
    q1, q2 = agent.critic(obs, action, detach_conv=True)
    alpha = agent.log_alpha.exp()
    actor_loss = (alpha.detach() * log_prob - torch.min(q1, q2)).mean()
    agent.actor_optimizer.zero_grad(set_to_none=True)
    actor_loss.backward()
    agent.actor_optimizer.step()
    alpha_loss = (alpha * (-log_prob - agent.target_entropy).detach()).mean()
    agent.alpha_optimizer.zero_grad(set_to_none=True)
    alpha_loss.backward()
    agent.alpha_optimizer.step()
    return {"losses/actor_loss": actor_loss.detach(), "losses/alpha_loss": alpha_loss.detach(),
            "losses/alpha": alpha.detach(), "losses/entropy": -log_prob.detach().mean()}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source over all parameters, encoder included (spec §1.1)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def update_decoder(agent: Agent, obs: torch.Tensor, latent_lambda: float) -> dict:
    """SAC-AE's autoencoder step (spec §5) on the critic's encoder: the reconstruction loss trains the encoder,
    head included (its own optimizer), and the decoder."""
    loss, rec_loss, _ = ae_loss(agent.critic.encoder, agent.decoder, obs, latent_lambda)
    agent.encoder_optimizer.zero_grad(set_to_none=True)
    agent.decoder_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    agent.encoder_optimizer.step()
    agent.decoder_optimizer.step()
    return {"losses/ae_loss": loss.detach(), "losses/reconstruction_mse": rec_loss.detach()}


def update(agent: Agent, rb: ReplayBuffer, step: int, batch_size: int, gamma: float = 0.99, tau: float = 0.01,
           policy_frequency: int = 2, target_network_frequency: int = 2, encoder_tau: float = 0.05,
           decoder_frequency: int = 1, latent_lambda: float = 1e-6) -> dict:
    """One SAC step at agent step `step` (spec §1.2) on raw replay samples; with a decoder (joint) SAC-AE's own
    encoder tau and its autoencoder step on the same batch (spec §5). Returns tensors (no host sync)."""
    obs, action, reward, next_obs, not_done = rb.sample(batch_size)
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, gamma)
    if step % policy_frequency == 0:
        metrics.update(update_actor_and_alpha(agent, obs))
    if step % target_network_frequency == 0:
        soft_update(agent.critic_target.q1, agent.critic.q1, tau)
        soft_update(agent.critic_target.q2, agent.critic.q2, tau)
        if agent.decoder is not None:  # joint; the frozen mode's critic holds no encoder parameters
            soft_update(agent.critic_target.encoder, agent.critic.encoder, encoder_tau)
    if agent.decoder is not None and step % decoder_frequency == 0:
        metrics.update(update_decoder(agent, obs, latent_lambda))
    return metrics


@torch.no_grad()
def measure_invariance(critic: Critic, obs: torch.Tensor, action: torch.Tensor, pad: int = 4) -> dict:
    """Question 2 of the report: mean squared difference of the critic's Q predictions (both heads) for the same
    (state, action) batch under two independent random shifts, and under one shift versus none."""
    q_a = torch.cat(critic(random_shift(obs, pad), action), dim=1)
    q_b = torch.cat(critic(random_shift(obs, pad), action), dim=1)
    q_0 = torch.cat(critic(obs, action), dim=1)
    return {"invariance/q_mse_two_shifts": F.mse_loss(q_a, q_b).item(),
            "invariance/q_mse_shift_vs_none": F.mse_loss(q_a, q_0).item()}


@torch.no_grad()
def act(actor: Actor, obs: np.ndarray, device: torch.device, sample: bool) -> np.ndarray:
    """Acting sees raw (unaugmented) observations: a policy sample while training, tanh(mu) when evaluating."""
    mu, log_std = actor(torch.as_tensor(obs, device=device).unsqueeze(0))
    action = sample_action(mu, log_std)[0] if sample else torch.tanh(mu)
    return action[0].cpu().numpy()


def evaluate(actor: Actor, env: dmc_envs.DMCEnv, episodes: int, device: torch.device, video_path: Path | None = None):
    """Returns of `episodes` deterministic episodes; the first is written to `video_path` (mp4) when given. A line
    every ~20 s says how far it is (ten pixel episodes can take half a minute on a loaded CPU)."""
    returns, last_line = [], time.time()
    for episode in range(episodes):
        if time.time() - last_line > 20:
            print(f"  evaluation: {episode}/{episodes} episodes", flush=True)
            last_line = time.time()
        obs, _ = env.reset()
        frames = [env.render_frame(256)] if video_path and episode == 0 else None
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(actor, obs, device, sample=False))
            done, total = terminated or truncated, total + reward
            if frames is not None:
                frames.append(env.render_frame(256))
        returns.append(total)
        if frames is not None:
            import imageio

            video_path.parent.mkdir(parents=True, exist_ok=True)
            imageio.mimsave(video_path, [f.transpose(1, 2, 0) for f in frames], fps=max(int(round(env.fps)), 1))
    return returns



def agent_state(agent: Agent) -> dict:
    state = {"actor": agent.actor.state_dict(), "critic": agent.critic.state_dict(),
             "critic_target": agent.critic_target.state_dict(), "log_alpha": agent.log_alpha.detach().clone(),
             "actor_optimizer": agent.actor_optimizer.state_dict(),
             "critic_optimizer": agent.critic_optimizer.state_dict(),
             "alpha_optimizer": agent.alpha_optimizer.state_dict()}
    if agent.decoder is not None:
        state |= {"decoder": agent.decoder.state_dict(), "encoder_optimizer": agent.encoder_optimizer.state_dict(),
                  "decoder_optimizer": agent.decoder_optimizer.state_dict()}
    return state


def load_agent_state(agent: Agent, state: dict) -> None:
    agent.critic.load_state_dict(state["critic"])
    agent.actor.load_state_dict(state["actor"])  # the tied convs load twice, with the same values
    agent.critic_target.load_state_dict(state["critic_target"])
    with torch.no_grad():
        agent.log_alpha.copy_(state["log_alpha"])
    optimizers = ["actor_optimizer", "critic_optimizer", "alpha_optimizer"]
    if agent.decoder is not None:
        agent.decoder.load_state_dict(state["decoder"])
        optimizers += ["encoder_optimizer", "decoder_optimizer"]
    for name in optimizers:
        getattr(agent, name).load_state_dict(state[name])


# ---------------------------------------------------------------------------------------------------------------
# The training loop (spec §1.2; joint: spec §5)

SCRIPT = Path(__file__).stem


def validate(args: Args, argv: list[str], pretrained: dict | None = None) -> tuple[Args, dict]:
    """One-line errors for bad input, before anything is written; returns the args with the mode's defaults filled
    in (`resolve_ae_args`; `pretrained`: a resumed run's copy of its encoder.pt) and the resolved settings."""
    optional = {"batch_size": args.batch_size, "buffer_size": args.buffer_size, "action_repeat": args.action_repeat,
                "frames_per_input": args.frames_per_input}  # None: the mode's or the task's default
    run_utils.positive(total_timesteps=args.total_timesteps, eval_episodes=args.eval_episodes,
                       eval_frequency=args.eval_frequency, episode_length=args.episode_length,
                       decoder_frequency=args.decoder_frequency, checkpoint_interval=args.checkpoint_interval,
                       **{name: value for name, value in optional.items() if value is not None})
    env_name = "-".join(dmc_envs.resolve_env_id(args.env_id))
    args, pretrained = resolve_ae_args(args, pretrained)
    action_repeat = args.action_repeat or dmc_envs.default_action_repeat(env_name)
    learning_starts = 1000 * action_repeat if args.learning_starts is None else args.learning_starts
    run_utils.require(0 <= learning_starts < args.total_timesteps, f"--learning-starts {learning_starts} must be "
                      f"in [0, --total-timesteps {args.total_timesteps})")
    at_first_update = min(math.ceil(learning_starts / action_repeat), args.buffer_size)
    run_utils.require(args.batch_size <= at_first_update, f"--batch-size {args.batch_size} is larger than the "
                      f"{at_first_update} transitions the buffer holds when updates start (--learning-starts "
                      f"{learning_starts} env steps at action repeat {action_repeat}, --buffer-size {args.buffer_size})")
    run_utils.check_runs_dir(args.runs_dir)
    run_utils.check_tracking(args.track, args.wandb_mode)
    device = run_utils.get_device(args.cuda, "--cuda" in argv)
    return args, {"env_name": env_name, "action_repeat": action_repeat, "learning_starts": learning_starts,
                  "pretrained": pretrained, "device": device}


def main(args: Args, argv: list[str] = ()):
    """Train (or, with --eval-checkpoint, only evaluate); returns (final dict, agent, replay buffer or None)."""
    t_start = time.time()
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = None
    if args.resume:
        ckpt = run_utils.load_checkpoint(Path(args.resume) / run_utils.CHECKPOINT, SCRIPT)
        args = run_utils.resume_args(args, ckpt, argv, vars(Args()))
    args, cfg = validate(args, argv, ckpt["pretrained"] if ckpt else None)
    env_name, action_repeat, learning_starts, pretrained, device = (
        cfg["env_name"], cfg["action_repeat"], cfg["learning_starts"], cfg["pretrained"], cfg["device"])
    joint = args.ae_mode == "joint"
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    run_name = ckpt["run_name"] if ckpt else f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.resume) if ckpt else Path(args.runs_dir) / run_name
    run_utils.announce(SCRIPT, env_name, device, run_dir,
                       f"{args.ae_mode} encoder, {args.total_timesteps} env steps (action repeat {action_repeat}), "
                       f"learning from step {learning_starts}, {args.eval_episodes}-episode evaluations every "
                       f"{args.eval_frequency} steps" + (f", resuming at step {ckpt['loop']['global_step']}"
                                                         if ckpt else ""))
    if args.action_repeat is None and env_name not in dmc_envs.ACTION_REPEAT:
        print(f"note: {env_name} is not in the PlaNet-benchmark action-repeat table; using {dmc_envs.DEFAULT_ACTION_REPEAT}, "
              "the Dreamer-benchmark value (spec §1.4)", flush=True)
    k = args.frames_per_input
    env = dmc_envs.make_env(env_name, args.seed, action_repeat, pixels=True, frame_stack=k, episode_length=args.episode_length)
    eval_env = dmc_envs.make_env(env_name, args.seed + 10_000, action_repeat, pixels=True, frame_stack=k,
                        episode_length=args.episode_length)
    if not joint:  # the report's observation: the frozen encoder's latents of the last N steps
        if pretrained["env_id"] != env_name:
            print(f"note: the encoder was pretrained on {pretrained['env_id']}, not {env_name}", flush=True)
        encoder = frozen_encoder(pretrained["encoder"], k, device)
        env = LatentStackEnv(env, encoder, args.latent_stack, k, device)
        eval_env = LatentStackEnv(eval_env, encoder, args.latent_stack, k, device)
    obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
    agent = make_agent(obs_shape, action_dim, device, args.hidden_dim, args.feature_dim, args.policy_lr, args.q_lr,
                       args.alpha_lr, args.init_temperature, joint, args.alpha_beta, args.encoder_lr, args.decoder_lr,
                       args.decoder_weight_lambda, pretrained if joint else None)
    rb = ReplayBuffer(args.buffer_size, obs_shape, action_dim, device,
                      episode_len=math.ceil(args.episode_length / action_repeat))
    record = run_utils.run_record(args, SCRIPT, run_name, device, action_repeat=action_repeat,
                                  learning_starts=learning_starts)
    logger = run_utils.RunLogger(args, run_dir, record, resume=ckpt["logger"] if ckpt else None)
    interrupts = run_utils.Interrupts()

    def run_evaluation(global_step: int) -> list[float]:
        t0 = time.time()
        print(f"eval at step {global_step}: {args.eval_episodes} episodes ...", flush=True)
        video = logger.dir / "videos" / f"eval_{global_step}.mp4" if args.capture_video else None
        returns = evaluate(agent.actor, eval_env, args.eval_episodes, device, video)
        point = {"eval/episodic_return": float(np.mean(returns)), "eval/episodic_return_std": float(np.std(returns))}
        if len(rb) > 0 and joint:  # shifts need pixel observations
            obs, action, _, _, _ = rb.sample(min(args.batch_size, 256))
            point.update(measure_invariance(agent.critic, obs, action))
        logger.log(global_step, **point)
        print(f"eval at step {global_step}: return {point['eval/episodic_return']:.1f} over {len(returns)} episodes "
              f"in {time.time() - t0:.0f} s", flush=True)
        return returns

    # burst: set only while a checkpoint is written inside SAC-AE's first updates: that step's action and the
    # updates done, where a resumed run continues
    loop = {"global_step": 0, "step": 0, "episode_return": 0.0, "episode_length": 0, "next_eval": 0,
            "last_eval_step": -1, "returns": [], "metrics": {}, "next_checkpoint": args.checkpoint_interval,
            "elapsed": 0.0, "updated": False, "burst": None}
    if ckpt:
        load_agent_state(agent, ckpt["agent"])
        rb.load_state_dict(ckpt["replay"])
        obs = env.restore(ckpt["env"])
        eval_env.restore(ckpt["eval_env"])
        loop = ckpt["loop"]
        run_utils.set_rng_state(ckpt["rng"])
    else:
        obs, _ = env.reset(seed=args.seed)
    t_start -= loop["elapsed"]
    progress = run_utils.Progress(args.total_timesteps, learning_starts, loop["global_step"])

    def checkpoint() -> Path:
        path = run_dir / run_utils.CHECKPOINT
        run_utils.save_checkpoint(path, SCRIPT, {
            "args": vars(args), "run_name": run_name, "pretrained": pretrained, "agent": agent_state(agent),
            "replay": rb.state_dict(), "env": env.snapshot(), "eval_env": eval_env.snapshot(),
            "rng": run_utils.rng_state(), "loop": {**loop, "elapsed": time.time() - t_start},
            "logger": logger.position()})
        return path

    while loop["global_step"] < args.total_timesteps:
        global_step = loop["global_step"]
        if interrupts.requested or global_step >= loop["next_checkpoint"]:
            path = checkpoint()
            if interrupts.requested:
                interrupts.exit(global_step, path, run_utils.resume_command(run_dir))
            loop["next_checkpoint"] += args.checkpoint_interval
        if global_step >= loop["next_eval"]:
            loop["returns"], loop["last_eval_step"] = run_evaluation(global_step), global_step
            loop["next_eval"] = (global_step // args.eval_frequency + 1) * args.eval_frequency
        # spec §1.2 order: choose the action, update, step the env, store the transition
        burst, loop["burst"] = loop["burst"], None
        if burst is not None:  # resumed inside the burst
            action, updates_done = burst["action"].numpy(), burst["done"]
        elif global_step < learning_starts:
            action, updates_done = env.action_space.sample(), 0
        else:
            action, updates_done = act(agent.actor, obs, device, sample=True), 0
        if global_step >= learning_starts:
            # joint: SAC-AE runs one update per seed step at once when learning starts, then one per step (spec §5)
            updates = len(rb) if joint and not loop["updated"] else 1
            for i in range(updates_done, updates):
                if interrupts.requested:  # a burst of a thousand updates takes many minutes on a CPU
                    loop["burst"] = {"action": action, "done": i}
                    interrupts.exit(global_step, checkpoint(), run_utils.resume_command(run_dir))
                loop["metrics"] |= update(agent, rb, loop["step"], args.batch_size, args.gamma, args.tau,
                                          args.policy_frequency, args.target_network_frequency, args.encoder_tau,
                                          args.decoder_frequency, args.decoder_latent_lambda)
                if updates > 1 and progress.due():
                    print(f"{progress.line(global_step, None)} | SAC-AE's first updates: {i + 1}/{updates}",
                          flush=True)
            loop["updated"] = True
        next_obs, reward, terminated, truncated, info = env.step(action)
        # the time limit is a truncation: bootstrap through it, only a termination stops it (spec §6 item 5)
        rb.add(obs, action, reward, next_obs, not_done=float(not terminated), done=terminated or truncated)
        obs = next_obs
        loop["step"] += 1
        loop["global_step"] += info["env_steps"]
        loop["episode_return"] += reward
        loop["episode_length"] += info["env_steps"]
        progress.update(loop["global_step"])
        if terminated or truncated:
            sps = loop["global_step"] / (time.time() - t_start)
            logger.log(loop["global_step"], **{"charts/episodic_return": loop["episode_return"],
                                               "charts/episodic_length": loop["episode_length"], "charts/SPS": sps},
                       **{key: value.item() for key, value in loop["metrics"].items()})
            print(progress.line(loop["global_step"], loop["episode_return"]), flush=True)
            obs, _ = env.reset()
            loop["episode_return"], loop["episode_length"] = 0.0, 0
        elif progress.due():
            print(progress.line(loop["global_step"], None), flush=True)
    global_step, returns = loop["global_step"], loop["returns"]
    if loop["last_eval_step"] != global_step:
        returns = run_evaluation(global_step)

    if args.save_model:  # frozen: the encoder's weights travel along, so --eval-checkpoint needs no encoder file
        run_utils.save_checkpoint(logger.dir / "model.pt", SCRIPT, {
            "args": vars(args), "run_name": run_name, **record, "agent": agent_state(agent),
            "pretrained": None if joint else pretrained})
    final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "k": 1, "m": 1, "ae_mode": args.ae_mode,
             "latent_stack": args.latent_stack, "frames_per_input": k,
             "action_repeat": action_repeat, "total_timesteps": global_step, "eval_episodes": args.eval_episodes,
             "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "returns": returns,
             "wall_time_s": time.time() - t_start, "run_name": run_name}
    logger.finish(final)
    (run_dir / run_utils.CHECKPOINT).unlink(missing_ok=True)  # the run is done; its replay need not stay on disk
    env.close()
    eval_env.close()
    print(f"final: mean return {final['mean_return']:.1f} +- {final['std_return']:.1f} -> {logger.dir}", flush=True)
    return final, agent, rb


def evaluate_checkpoint(args: Args, argv: list[str]):
    """--eval-checkpoint: rebuild the agent of a model.pt or checkpoint.pt (its env, action repeat, sizes and, frozen,
    encoder) and evaluate it; nothing is trained."""
    t_start = time.time()
    run_utils.positive(eval_episodes=args.eval_episodes)
    ckpt = run_utils.load_checkpoint(args.eval_checkpoint, SCRIPT)
    saved = ckpt["args"]
    run_utils.check_runs_dir(args.runs_dir)
    run_utils.check_tracking(args.track, args.wandb_mode)
    device = run_utils.get_device(args.cuda, "--cuda" in argv)
    joint, k = saved["ae_mode"] == "joint", saved["frames_per_input"]
    action_repeat = saved["action_repeat"] or dmc_envs.default_action_repeat(saved["env_id"])
    env_name = "-".join(dmc_envs.resolve_env_id(saved["env_id"]))
    env = dmc_envs.make_env(env_name, saved["seed"] + 10_000, action_repeat, pixels=True, frame_stack=k,
                   episode_length=saved["episode_length"])
    if not joint:
        env = LatentStackEnv(env, frozen_encoder(ckpt["pretrained"]["encoder"], k, device), saved["latent_stack"], k,
                             device)
    agent = make_agent(env.observation_space.shape, env.action_space.shape[0], device, saved["hidden_dim"],
                       saved["feature_dim"], joint=joint)
    load_agent_state(agent, ckpt["agent"])
    run_name = f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    record = run_utils.run_record(args, SCRIPT, run_name, device)
    logger = run_utils.RunLogger(args, Path(args.runs_dir) / run_name, record)
    video = logger.dir / "videos" / "eval_checkpoint.mp4" if args.capture_video else None
    returns = evaluate(agent.actor, env, args.eval_episodes, device, video)
    final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "k": 1, "m": 1,
             "ae_mode": saved["ae_mode"], "action_repeat": action_repeat, "total_timesteps": 0,
             "eval_episodes": args.eval_episodes, "mean_return": float(np.mean(returns)),
             "std_return": float(np.std(returns)), "returns": returns, "wall_time_s": time.time() - t_start,
             "run_name": run_name, "evaluated_checkpoint": str(args.eval_checkpoint)}
    logger.finish(final)
    print(f"checkpoint {args.eval_checkpoint}: mean return {final['mean_return']:.1f} over {len(returns)} "
          f"episodes -> {logger.dir}", flush=True)
    return final, agent, None


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, parsed by tyro (sweep.py checks each cell with it before starting anything)."""
    return tyro.cli(Args, args=argv)


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

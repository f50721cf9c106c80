"""SAC:pixel: SAC from pixels without augmentation (drq_sac.py with K = M = 1 and no shifts), on DeepMind Control.

The "SAC:pixel" baseline of Kostrikov, Yarats & Fergus, "Image Augmentation Is All You Need" (ICLR 2021). Every
constant follows spec/ALGORITHMS.md §1 (cited as "spec §x"); `diff sac_pixels.py drq_sac.py` shows exactly
what DrQ adds to this baseline. Steps users see (flags, x-axes, final.json) are environment steps = agent steps x
action repeat, as the paper reports them.

    python sac_pixels.py --seed 3                                # cartpole-swingup, 500k env steps
    python sac_pixels.py --eval-checkpoint runs/<run>/model.pt   # evaluate a saved model, train nothing
"""
import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
    """if toggled, save actor, critic, target critic and temperature to runs/{run_name}/model.pt"""
    eval_checkpoint: str | None = None
    """path of a model.pt to load and evaluate (its env id and action repeat); no training happens"""
    checkpoint_interval: int = 10_000
    """env steps between full-state checkpoints (networks, optimizers, replay, RNG and env state) in runs/{run_name}/checkpoint.pt; SIGINT/SIGTERM also write one"""

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
    buffer_size: int = 100_000
    """replay capacity in transitions (agent steps) (spec §1.4)"""
    batch_size: int = 512
    """minibatch size: 512 for the paper's main results, 128 in the authors' config and ablations (spec §1.4)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before the first update; default: 1000 agent steps x action repeat (spec §1.4 num_seed_steps)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.01
    """soft-update rate of the whole target critic, encoder included (spec §1.1)"""
    policy_lr: float = 1e-3
    """Adam learning rate of the actor (spec §1.4)"""
    q_lr: float = 1e-3
    """Adam learning rate of the critic, its encoder included (spec §1.4)"""
    alpha_lr: float = 1e-3
    """Adam learning rate of log(alpha) (spec §1.4)"""
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
    encoder_path: str | None = None
    """encoder.pt of pretrain_autoencoder.py: frames (shifted in drq_sac.py, raw in sac_pixels.py) go through this frozen encoder and the latents of the last --latent-stack steps are concatenated, the reproduction report's "DrQ on SAC+AE" and its no-augmentation control; default: the paper's end-to-end encoder"""
    latent_stack: int = 8
    """with --encoder-path: the features are the latents of the last N agent steps (report §2)"""

    # Evaluation (spec §1.4)
    eval_frequency: int = 10_000
    """env steps between evaluations (the paper's 10k); one also runs at step 0 and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, deterministic action tanh(mu)"""

    # Speed: the same arithmetic, up to float rounding
    channels_last: bool = True
    """run the convolutions in torch.channels_last memory layout (this project's CPU, one thread, drq_sac K=2,M=2: 4% less CPU time per update at batch 128, 5% at 512; not measured on CUDA)"""
    compile: bool = False
    """torch.compile actor, critic and target critic in place (on CPU it needs a C++ compiler); off by default: on this project's CPU the first updates took 2 minutes to compile and then saved nothing (drq_sac K=2,M=2, batch 128: 1029 against 1033 ms CPU per update)"""


# ---------------------------------------------------------------------------------------------------------------
# Augmentation (spec §1.3)


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


def pretrained_frames_per_input(path: str) -> int:
    """Frames per input of pretrain_autoencoder.py's encoder.pt, checked early: a bad file is a one-line error."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["frames_per_input"])
    except Exception as exc:  # a missing or wrong file fails in many ways
        raise SystemExit(f"error: --encoder-path {path} is not an encoder.pt of pretrain_autoencoder.py "
                         f"({type(exc).__name__}: {exc})") from None


class PretrainedEncoder(nn.Module):
    """The report's "DrQ on SAC+AE" (§2, §4): pretrain_autoencoder.py's frozen encoder (this file's Encoder class,
    so its weights load bit-for-bit) applied to each of the last `latent_stack` steps, the latents concatenated.
    The observation holds the last latent_stack + frames_per_input - 1 frames, so one shift moves them all. No
    gradient reaches its weights; Actor and Critic re-initialise what they hold, so call load_pretrained after."""

    def __init__(self, path: str, latent_stack: int, channels_last: bool = False):
        super().__init__()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.k, self.n, self.pretrained = ckpt["frames_per_input"], latent_stack, ckpt["encoder"]
        self.encoder = Encoder((3 * self.k, 84, 84), ckpt["feature_dim"], channels_last=channels_last)
        self.feature_dim = latent_stack * self.encoder.feature_dim
        self.load_pretrained()

    def load_pretrained(self) -> None:
        self.encoder.load_state_dict(self.pretrained)
        self.encoder.requires_grad_(False)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        b, _, h, w = obs.shape
        channels = torch.arange(3 * self.k, device=obs.device) + 3 * torch.arange(self.n, device=obs.device)[:, None]
        with torch.no_grad():  # step j's input: frames j .. j + k - 1, batched as B * N inputs
            return self.encoder(obs[:, channels.flatten()].reshape(b * self.n, 3 * self.k, h, w)).reshape(b, -1)


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


def make_agent(obs_shape: tuple[int, ...], action_dim: int, device: torch.device, hidden_dim: int = 1024,
               feature_dim: int = FEATURE_DIM, policy_lr: float = 1e-3, q_lr: float = 1e-3, alpha_lr: float = 1e-3,
               init_temperature: float = 0.1, encoder_path: str | None = None, latent_stack: int = 8,
               channels_last: bool = True, compile_networks: bool = False) -> Agent:
    if encoder_path:  # the report's (DrQ on) SAC+AE: one frozen pretrained encoder under actor and critic
        encoder = PretrainedEncoder(encoder_path, latent_stack, channels_last)
        actor = Actor(encoder, action_dim, hidden_dim).to(device)
        critic = Critic(encoder, action_dim, hidden_dim).to(device)
        encoder.load_pretrained()
    else:
        actor = Actor(Encoder(obs_shape, feature_dim, channels_last=channels_last), action_dim, hidden_dim).to(device)
        critic = Critic(Encoder(obs_shape, feature_dim, channels_last=channels_last), action_dim, hidden_dim).to(device)
        # Tie after init (spec §1.1): the actor's convs become the critic's Parameters, the heads stay separate.
        actor.encoder.convs = critic.encoder.convs
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    if compile_networks:  # in place, after the copy: parameter names, and so checkpoints, stay those of eager mode
        for net in (actor, critic, critic_target):
            net.compile()
    log_alpha = torch.tensor(math.log(init_temperature), device=device, requires_grad=True)
    # The convs learn from the critic loss only, so the actor's optimizer does not hold them.
    actor_params = [p for name, p in actor.named_parameters() if not name.startswith("encoder.convs.")]
    return Agent(actor, critic, critic_target, log_alpha,
                 torch.optim.Adam(actor_params, lr=policy_lr),
                 torch.optim.Adam(critic.parameters(), lr=q_lr),
                 torch.optim.Adam([log_alpha], lr=alpha_lr),
                 target_entropy=-float(action_dim))


# ---------------------------------------------------------------------------------------------------------------
# Replay buffer: every RGB frame stored once, on the training device


class ReplayBuffer:
    """Transitions of frame-stacked pixel observations with each RGB frame stored once (100k transitions take
    ~2.1 GB instead of 12.7 GB for stacked obs and next obs). Transition i keeps the slots of its frame_stack + 1
    frames (oldest first): obs = frames 0..S-1, next obs = frames 1..S, assembled at sample time by one gather.
    An episode's first frame is stored once and referenced frame_stack times (the env's reset copies it). The
    frame ring holds `capacity` frames plus one per episode of `episode_len` agent steps; a transition whose
    oldest frame was overwritten (only with shorter episodes) is never sampled."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_dim: int, device: torch.device,
                 episode_len: int = 1):
        self.capacity, self.device = capacity, device
        self.stack = obs_shape[0] // 3
        self.num_frames = capacity + math.ceil(capacity / max(episode_len, 1)) + self.stack + 1
        self.frames = torch.empty((self.num_frames, 3, *obs_shape[1:]), dtype=torch.uint8, device=device)
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
            self.current = [self.write_frame(obs[-3:])] * self.stack
        frames = self.current + [self.write_frame(next_obs[-3:])]
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
        """obs, action, reward, next_obs, not_done of buffer slots `idx`, obs stacks (n, 3*S, H, W) uint8."""
        frames = self.frames[self.frame_idx[idx]]  # (n, S+1, 3, H, W)
        n, h, w = len(idx), frames.shape[-2], frames.shape[-1]
        obs = frames[:, :-1].reshape(n, -1, h, w)
        next_obs = frames[:, 1:].reshape(n, -1, h, w)
        return obs, self.actions[idx], self.rewards[idx], next_obs, self.not_dones[idx]

    def sample(self, batch_size: int):
        # uniform with replacement over the sampleable transitions, as the authors' replay_buffer.sample
        idx = (self.start + torch.randint(0, len(self), (batch_size,), device=self.device)) % self.capacity
        return self.get(idx)

    def state_dict(self) -> dict:
        """What a checkpoint needs: the written part of each array (uint8 frames as stored) and the counters."""
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
# The SAC update (spec §1.2 with K = M = 1 and no augmentation)


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
                  not_done: torch.Tensor, gamma: float,
                  noise: torch.Tensor | None = None) -> dict:
    target = td_target(agent.actor, agent.critic_target, agent.log_alpha.exp(), next_obs, reward, not_done, gamma,
                       noise)
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


def update(agent: Agent, rb: ReplayBuffer, step: int, batch_size: int, gamma: float = 0.99, tau: float = 0.01,
           policy_frequency: int = 2, target_network_frequency: int = 2) -> dict:
    """One SAC step at agent step `step` (spec §1.2) on raw replay samples. Returns tensors (no host sync)."""
    obs, action, reward, next_obs, not_done = rb.sample(batch_size)
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, gamma)
    if step % policy_frequency == 0:
        metrics.update(update_actor_and_alpha(agent, obs))
    if step % target_network_frequency == 0:
        soft_update(agent.critic_target, agent.critic, tau)
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
    return {"actor": agent.actor.state_dict(), "critic": agent.critic.state_dict(),
            "critic_target": agent.critic_target.state_dict(), "log_alpha": agent.log_alpha.detach().clone(),
            "actor_optimizer": agent.actor_optimizer.state_dict(),
            "critic_optimizer": agent.critic_optimizer.state_dict(),
            "alpha_optimizer": agent.alpha_optimizer.state_dict()}


def load_agent_state(agent: Agent, state: dict) -> None:
    agent.critic.load_state_dict(state["critic"])
    agent.actor.load_state_dict(state["actor"])  # the tied convs load twice, with the same values
    agent.critic_target.load_state_dict(state["critic_target"])
    with torch.no_grad():
        agent.log_alpha.copy_(state["log_alpha"])
    for name in ["actor_optimizer", "critic_optimizer", "alpha_optimizer"]:
        getattr(agent, name).load_state_dict(state[name])


# ---------------------------------------------------------------------------------------------------------------
# The training loop (spec §1.2)

SCRIPT = Path(__file__).stem


def validate(args: Args, argv: list[str]) -> dict:
    """One-line errors for bad input, before anything is written; returns the resolved settings."""
    run_utils.positive(total_timesteps=args.total_timesteps, batch_size=args.batch_size, buffer_size=args.buffer_size,
                       eval_episodes=args.eval_episodes, eval_frequency=args.eval_frequency,
                       episode_length=args.episode_length, latent_stack=args.latent_stack,
                       checkpoint_interval=args.checkpoint_interval)
    env_name = "-".join(dmc_envs.resolve_env_id(args.env_id))
    if args.action_repeat is not None:
        run_utils.positive(action_repeat=args.action_repeat)
    action_repeat = args.action_repeat or dmc_envs.default_action_repeat(env_name)
    learning_starts = 1000 * action_repeat if args.learning_starts is None else args.learning_starts
    run_utils.require(0 <= learning_starts < args.total_timesteps, f"--learning-starts {learning_starts} must be "
                      f"in [0, --total-timesteps {args.total_timesteps})")
    at_first_update = min(math.ceil(learning_starts / action_repeat), args.buffer_size)
    run_utils.require(args.batch_size <= at_first_update, f"--batch-size {args.batch_size} is larger than the "
                      f"{at_first_update} transitions the buffer holds when updates start (--learning-starts "
                      f"{learning_starts} env steps at action repeat {action_repeat}, --buffer-size {args.buffer_size})")
    frame_stack = 3  # with --encoder-path: the frames of the last latent_stack inputs
    if args.encoder_path is not None:
        frame_stack = args.latent_stack + pretrained_frames_per_input(args.encoder_path) - 1
    run_utils.check_runs_dir(args.runs_dir)
    run_utils.check_tracking(args.track, args.wandb_mode)
    device = run_utils.get_device(args.cuda, "--cuda" in argv)
    return {"env_name": env_name, "action_repeat": action_repeat, "learning_starts": learning_starts,
            "frame_stack": frame_stack, "device": device}


def main(args: Args, argv: list[str] = ()):
    """Train (or, with --eval-checkpoint, only evaluate); returns (final dict, agent, replay buffer or None)."""
    t_start = time.time()
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = None
    if args.resume:
        ckpt = run_utils.load_checkpoint(Path(args.resume) / run_utils.CHECKPOINT, SCRIPT)
        args = run_utils.resume_args(args, ckpt, argv, vars(Args()))
    cfg = validate(args, argv)
    env_name, action_repeat, learning_starts, device = (cfg["env_name"], cfg["action_repeat"],
                                                        cfg["learning_starts"], cfg["device"])
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    run_name = ckpt["run_name"] if ckpt else f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.resume) if ckpt else Path(args.runs_dir) / run_name
    run_utils.announce(SCRIPT, env_name, device, run_dir,
                       f"{args.total_timesteps} env steps (action repeat {action_repeat}), learning from step "
                       f"{learning_starts}, {args.eval_episodes}-episode evaluations every {args.eval_frequency} "
                       f"steps" + (f", resuming at step {ckpt['loop']['global_step']}" if ckpt else ""))
    if args.action_repeat is None and env_name not in dmc_envs.ACTION_REPEAT:
        print(f"note: {env_name} is not in the PlaNet-benchmark action-repeat table; using {dmc_envs.DEFAULT_ACTION_REPEAT}, "
              "the Dreamer-benchmark value (spec §1.4)", flush=True)
    env = dmc_envs.make_env(env_name, args.seed, action_repeat, pixels=True, frame_stack=cfg["frame_stack"],
                   episode_length=args.episode_length)
    eval_env = dmc_envs.make_env(env_name, args.seed + 10_000, action_repeat, pixels=True, frame_stack=cfg["frame_stack"],
                        episode_length=args.episode_length)
    obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
    agent = make_agent(obs_shape, action_dim, device, args.hidden_dim, args.feature_dim, args.policy_lr, args.q_lr,
                       args.alpha_lr, args.init_temperature, args.encoder_path, args.latent_stack, args.channels_last,
                       args.compile)
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
        if len(rb) > 0:
            obs, action, _, _, _ = rb.sample(min(args.batch_size, 256))
            point.update(measure_invariance(agent.critic, obs, action))
        logger.log(global_step, **point)
        print(f"eval at step {global_step}: return {point['eval/episodic_return']:.1f} over {len(returns)} episodes "
              f"in {time.time() - t0:.0f} s", flush=True)
        return returns

    loop = {"global_step": 0, "step": 0, "episode_return": 0.0, "episode_length": 0, "next_eval": 0,
            "last_eval_step": -1, "returns": [], "metrics": {}, "next_checkpoint": args.checkpoint_interval,
            "elapsed": 0.0}
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
            "args": vars(args), "run_name": run_name, "agent": agent_state(agent), "replay": rb.state_dict(),
            "env": env.snapshot(), "eval_env": eval_env.snapshot(), "rng": run_utils.rng_state(),
            "loop": {**loop, "elapsed": time.time() - t_start}, "logger": logger.position()})
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
        if global_step < learning_starts:
            action = env.action_space.sample()
        else:
            action = act(agent.actor, obs, device, sample=True)
        if global_step >= learning_starts:
            loop["metrics"] |= update(agent, rb, loop["step"], args.batch_size, args.gamma, args.tau,
                                      args.policy_frequency, args.target_network_frequency)
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

    if args.save_model:
        run_utils.save_checkpoint(logger.dir / "model.pt", SCRIPT, {"args": vars(args), "run_name": run_name,
                                                                    **record, "agent": agent_state(agent)})
    final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "k": 1, "m": 1,
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
    """--eval-checkpoint: rebuild the agent of a model.pt or checkpoint.pt (its env, action repeat and sizes) and
    evaluate it; nothing is trained."""
    t_start = time.time()
    run_utils.positive(eval_episodes=args.eval_episodes)
    ckpt = run_utils.load_checkpoint(args.eval_checkpoint, SCRIPT)
    saved = ckpt["args"]
    run_utils.check_runs_dir(args.runs_dir)
    run_utils.check_tracking(args.track, args.wandb_mode)
    device = run_utils.get_device(args.cuda, "--cuda" in argv)
    encoder_path, latent_stack = saved["encoder_path"], saved["latent_stack"]
    frame_stack = 3 if encoder_path is None else latent_stack + pretrained_frames_per_input(encoder_path) - 1
    action_repeat = saved["action_repeat"] or dmc_envs.default_action_repeat(saved["env_id"])
    env_name = "-".join(dmc_envs.resolve_env_id(saved["env_id"]))
    env = dmc_envs.make_env(env_name, saved["seed"] + 10_000, action_repeat, pixels=True, frame_stack=frame_stack,
                   episode_length=saved["episode_length"])
    agent = make_agent(env.observation_space.shape, env.action_space.shape[0], device, saved["hidden_dim"],
                       saved["feature_dim"], encoder_path=encoder_path, latent_stack=latent_stack,
                       channels_last=args.channels_last, compile_networks=args.compile)
    load_agent_state(agent, ckpt["agent"])
    run_name = f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    record = run_utils.run_record(args, SCRIPT, run_name, device)
    logger = run_utils.RunLogger(args, Path(args.runs_dir) / run_name, record)
    video = logger.dir / "videos" / "eval_checkpoint.mp4" if args.capture_video else None
    returns = evaluate(agent.actor, env, args.eval_episodes, device, video)
    final = {"env_id": env_name, "algo": args.exp_name, "seed": args.seed, "k": saved.get("k", 1),
             "m": saved.get("m", 1), "action_repeat": action_repeat, "total_timesteps": 0,
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

"""SAC+AE: SAC from pixels with a convolutional autoencoder (Yarats et al., arXiv 1910.01741), on DeepMind Control.

The DrQ paper's "SAC-AE" baseline (spec/ALGORITHMS.md §5, "spec §x"): sac_pixels.py's SAC with SAC-AE's constants
and initialisation, whose encoder the critic loss and a reconstruction loss train together; on s (3 stacked frames):

    y    = r + gamma not_done (min_i Q'_i(s', a') - alpha log pi(a' | s')), a' ~ pi(s')
    L_Q  = sum_i mean_B (Q_i(s, a) - y)^2
    L_AE = mean (decoder(h) - 5-bit target of s)^2 + lambda_z mean_B 0.5 ||h||^2,  h = the critic's encoder(s)

Actor and temperature learn as in SAC; the target follows the Q heads at tau, the encoder at encoder_tau; as learning
starts, one update per seed step runs at once. The autoencoder (its decoder, SAC-AE's init, the L_AE step) is
pretrain_autoencoder.py's, the script that trains it alone, so it is written once; `diff sac_pixels.py sac_ae.py`
shows what SAC+AE adds to SAC. Steps are env steps.

    python sac_ae.py --seed 3                                    # cartpole-swingup, 500k env steps
    python sac_ae.py --encoder-path runs_ae/<run>/encoder.pt     # start from pretrain_autoencoder.py's autoencoder
"""
import copy
import functools
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import ae_files
import dmc_envs
import pretrain_autoencoder
import run_utils

SCRIPT = Path(__file__).stem
FEATURE_DIM = 50  # spec §1.1 feature_dim


@dataclass
class Args(dmc_envs.EnvArgs, run_utils.AgentRunArgs):
    exp_name: str = SCRIPT
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, python and the environment)"""

    # Algorithm (spec §1.2, §1.4, §5, §6 items 4 and 7)
    total_timesteps: int = 500_000
    """env steps of training (the paper reports 100k and 500k)"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions (agent steps) (SAC-AE, spec §5)"""
    batch_size: int = 128
    """minibatch size (SAC-AE, spec §5)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before the first update; default: 1000 agent steps (spec §1.4)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.01
    """soft-update rate of the target Q heads (SAC-AE critic_tau, spec §5); the encoder's is --encoder-tau"""
    policy_lr: float = 1e-3
    """Adam learning rate of the actor (spec §1.4)"""
    q_lr: float = 1e-3
    """Adam learning rate of the critic, its encoder included (spec §1.4)"""
    alpha_lr: float = 1e-4
    """Adam learning rate of log(alpha) (SAC-AE, spec §5)"""
    alpha_beta: float = 0.5
    """Adam beta1 of log(alpha) (SAC-AE, spec §5)"""
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
    """encoder.pt of pretrain_autoencoder.py: the encoder (both heads) and the decoder start from it (README)"""
    frames_per_input: int | None = None
    """frames per encoder input: the --encoder-path checkpoint's, else 3 (SAC-AE's frame stack, spec §5)"""
    encoder_tau: float = 0.05
    """soft-update rate of the target critic's encoder (SAC-AE encoder_tau, spec §5)"""
    encoder_lr: float = 1e-3
    """Adam learning rate of the encoder under the reconstruction loss (SAC-AE encoder_lr, spec §5)"""
    decoder_lr: float = 1e-3
    """Adam learning rate of the decoder (SAC-AE decoder_lr, spec §5)"""
    decoder_latent_lambda: float = 1e-6
    """weight of the L2 penalty on the latent (SAC-AE decoder_latent_lambda, spec §5)"""
    decoder_weight_lambda: float = 1e-7
    """Adam weight decay of the decoder (SAC-AE decoder_weight_lambda, spec §5)"""
    decoder_frequency: int = 1
    """agent steps between autoencoder updates (SAC-AE decoder_update_freq, spec §5)"""


# -- Networks (spec §1.1) ---------------------------------------------------------------------------------------


def weight_init(m: nn.Module) -> None:
    """Spec §1.1: orthogonal init, Linear gain 1, conv gain sqrt(2) (ReLU) on the whole kernel; biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        m.bias.data.fill_(0.0)


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


# -- Augmentation (spec §1.3): only the critic's invariance measurement (report question 2) shifts images -------


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


# -- Replay buffer: every RGB frame stored once, on the training device -----------------------------------------


class ReplayBuffer:
    """Transitions of stacks of S frames, each RGB frame stored once (100k transitions: ~2.1 GB, not 12.7 GB; an
    episode's first frame once, not S times). Transition i keeps the ring slots of its S + 1 frames, oldest first:
    obs = frames 0..S-1, next obs = frames 1..S, gathered at sample time. The ring holds `capacity` frames plus one
    per episode of `episode_len` agent steps; a transition whose oldest frame is overwritten is never sampled."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_dim: int, device: torch.device,
                 episode_len: int = 1):
        self.capacity, self.device, self.stack = capacity, device, obs_shape[0] // 3
        self.num_frames = capacity + math.ceil(capacity / max(episode_len, 1)) + self.stack + 1
        self.frames = torch.empty((self.num_frames, 3, *obs_shape[1:]), dtype=torch.uint8, device=device)
        self.frame_idx = torch.zeros((capacity, self.stack + 1), dtype=torch.long, device=device)
        self.actions = torch.zeros((capacity, action_dim), dtype=torch.float32, device=device)
        self.rewards = torch.zeros((capacity, 1), dtype=torch.float32, device=device)
        self.not_dones = torch.zeros((capacity, 1), dtype=torch.float32, device=device)
        self.oldest_frame = np.zeros(capacity, dtype=np.int64)  # global frame number of each transition's frame 0
        # global counters: frames written, transitions added, the oldest sampleable transition
        self.frames_written = self.added = self.start = 0
        self.current: list[int] | None = None  # global frame numbers of the current obs stack

    def write_frame(self, frame: np.ndarray) -> int:
        self.frames[self.frames_written % self.num_frames] = torch.as_tensor(frame, device=self.device)
        self.frames_written += 1
        return self.frames_written - 1

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, not_done: float,
            done: bool) -> None:
        """not_done: 0 only on a termination (the bootstrap mask); done: the episode ended (the next add starts one)."""
        if self.current is None:
            self.current = [self.write_frame(obs[-3:])] * self.stack
        frames = self.current + [self.write_frame(next_obs[-3:])]
        i = self.added % self.capacity
        self.frame_idx[i] = torch.as_tensor(frames, device=self.device) % self.num_frames
        self.actions[i] = torch.as_tensor(action, device=self.device)
        self.rewards[i], self.not_dones[i], self.oldest_frame[i] = float(reward), float(not_done), frames[0]
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
        obs, next_obs = frames[:, :-1].reshape(n, -1, h, w), frames[:, 1:].reshape(n, -1, h, w)
        return obs, self.actions[idx], self.rewards[idx], next_obs, self.not_dones[idx]

    def sample(self, batch_size: int):
        # uniform with replacement over the sampleable transitions, as the authors' replay_buffer.sample
        return self.get((self.start + torch.randint(0, len(self), (batch_size,), device=self.device)) % self.capacity)


# -- The SAC+AE update: sac_pixels.py's SAC step (spec §1.2) and pretrain_autoencoder.py's autoencoder step (spec §5)


def update_critic(agent: "Agent", obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                  next_obs: torch.Tensor, not_done: torch.Tensor, gamma: float,
                  noise: torch.Tensor | None = None) -> dict:
    """The critic step of spec §1.2 on the B states and next states. `noise` (B, |A|) fixes the next-action
    samples (tests)."""
    with torch.no_grad():  # the target, at a sampled next action
        mu, log_std = agent.actor(next_obs)
        next_action, log_prob = sample_action(mu, log_std, noise)
        target_q1, target_q2 = agent.critic_target(next_obs, next_action)
        target_v = torch.min(target_q1, target_q2) - agent.log_alpha.exp() * log_prob
        target = reward + not_done * gamma * target_v
    q1, q2 = agent.critic(obs, action)  # both Q heads against the target
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)  # the mean over the B rows
    agent.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    agent.critic_optimizer.step()
    return {"losses/critic_loss": loss.detach(), "losses/q": q1.detach().mean()}


def update_actor_and_alpha(agent: "Agent", obs: torch.Tensor) -> dict:
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


def update(agent: "Agent", rb: ReplayBuffer, step: int, batch_size: int, gamma: float = 0.99, tau: float = 0.01,
           policy_frequency: int = 2, target_network_frequency: int = 2, encoder_tau: float = 0.05,
           decoder_frequency: int = 1, latent_lambda: float = 1e-6) -> dict:
    """One SAC+AE step at agent step `step` on raw replay samples (spec §1.2, §5): the SAC step, SAC-AE's two target
    rates, the autoencoder step on the same batch. Returns tensors (no host sync)."""
    obs, action, reward, next_obs, not_done = rb.sample(batch_size)
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, gamma)
    if step % policy_frequency == 0:
        metrics.update(update_actor_and_alpha(agent, obs))
    if step % target_network_frequency == 0:
        soft_update(agent.critic_target.q1, agent.critic.q1, tau)
        soft_update(agent.critic_target.q2, agent.critic.q2, tau)
        soft_update(agent.critic_target.encoder, agent.critic.encoder, encoder_tau)
    if step % decoder_frequency == 0:  # L_AE: the autoencoder step of pretrain_autoencoder.py, its own file
        metrics.update(pretrain_autoencoder.update_autoencoder(
            agent.critic.encoder, agent.decoder, agent.encoder_optimizer, agent.decoder_optimizer, obs, latent_lambda))
    return metrics


# -- Evaluation (spec §1.4), and the critic's invariance to shifts (report question 2) --------------------------


@torch.no_grad()
def act(actor: Actor, obs: np.ndarray, device: torch.device, sample: bool) -> np.ndarray:
    """Acting sees raw (unaugmented) observations: a policy sample while training, tanh(mu) when evaluating."""
    mu, log_std = actor(torch.as_tensor(obs, device=device).unsqueeze(0))
    action = sample_action(mu, log_std)[0] if sample else torch.tanh(mu)
    return action[0].cpu().numpy()


def evaluate(actor: Actor, env: dmc_envs.DMCEnv, episodes: int, device: torch.device, video_path: Path | None = None):
    """Returns of `episodes` deterministic episodes; the first is written to `video_path` (mp4) when given."""
    return dmc_envs.run_episodes(env, lambda obs: act(actor, obs, device, sample=False), episodes, video_path)


@torch.no_grad()
def measure_invariance(critic: Critic, obs: torch.Tensor, action: torch.Tensor, pad: int = 4) -> dict:
    """Mean squared difference of the critic's Q predictions (both heads) for the same (state, action) batch under
    two independent random shifts, and under one shift versus none."""
    q_a = torch.cat(critic(random_shift(obs, pad), action), dim=1)
    q_b = torch.cat(critic(random_shift(obs, pad), action), dim=1)
    q_0 = torch.cat(critic(obs, action), dim=1)
    return {"invariance/q_mse_two_shifts": F.mse_loss(q_a, q_b).item(),
            "invariance/q_mse_shift_vs_none": F.mse_loss(q_a, q_0).item()}


# -- The agent: sac_pixels.py's networks with SAC-AE's init, plus pretrain_autoencoder.py's decoder (spec §1.1, §5)


@dataclass
class Agent:
    """What the update trains: actor, critic (the actor's convs are the critic's), target critic, temperature, and the
    decoder with the autoencoder's two optimizers (the encoder's is over the critic's encoder)."""
    actor: Actor
    critic: Critic
    critic_target: Critic
    log_alpha: torch.Tensor
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    alpha_optimizer: torch.optim.Optimizer
    target_entropy: float
    decoder: pretrain_autoencoder.Decoder
    encoder_optimizer: torch.optim.Optimizer
    decoder_optimizer: torch.optim.Optimizer


def make_agent(obs_shape: tuple[int, ...], action_dim: int, device: torch.device, hidden_dim: int = 1024,
               feature_dim: int = FEATURE_DIM, policy_lr: float = 1e-3, q_lr: float = 1e-3, alpha_lr: float = 1e-4,
               init_temperature: float = 0.1, alpha_beta: float = 0.5, encoder_lr: float = 1e-3,
               decoder_lr: float = 1e-3, decoder_weight_lambda: float = 1e-7, pretrained: dict | None = None) -> Agent:
    """SAC-AE's initialisation (spec §5), or the encoder (both heads) and decoder of `pretrained` (an encoder.pt)."""
    actor = Actor(Encoder(obs_shape, feature_dim), action_dim, hidden_dim).to(device)
    critic = Critic(Encoder(obs_shape, feature_dim), action_dim, hidden_dim).to(device)
    actor.apply(pretrain_autoencoder.ae_weight_init)
    critic.apply(pretrain_autoencoder.ae_weight_init)
    decoder = pretrain_autoencoder.Decoder(obs_shape[0], feature_dim).to(device)  # SAC-AE's init is in its __init__
    if pretrained is not None:
        actor.encoder.load_state_dict(pretrained["encoder"])
        critic.encoder.load_state_dict(pretrained["encoder"])
        decoder.load_state_dict(pretrained["decoder"])
    # Tie after init (spec §1.1): the actor's convs become the critic's Parameters, the heads stay separate.
    actor.encoder.convs = critic.encoder.convs
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.tensor(math.log(init_temperature), device=device, requires_grad=True)
    # The convs learn from the critic loss only, so the actor's optimizer does not hold them.
    actor_params = [p for name, p in actor.named_parameters() if not name.startswith("encoder.convs.")]
    return Agent(actor, critic, critic_target, log_alpha, torch.optim.Adam(actor_params, lr=policy_lr),
                 torch.optim.Adam(critic.parameters(), lr=q_lr),
                 torch.optim.Adam([log_alpha], lr=alpha_lr, betas=(alpha_beta, 0.999)),
                 -float(action_dim), decoder, *pretrain_autoencoder.make_ae_optimizers(
                     critic.encoder, decoder, encoder_lr, decoder_lr, decoder_weight_lambda))


# -- Environment: a dm_control task through dmc_envs.py (spec §1.4, §6 items 3 and 5), 84x84 RGB frames ---------


def make_env(env_name: str, seed: int, action_repeat: int, frame_stack: int, episode_length: int) -> dmc_envs.DMCEnv:
    return dmc_envs.make_env(env_name, seed, action_repeat, pixels=True, frame_stack=frame_stack,
                             episode_length=episode_length)


# -- The training loop (spec §1.2; SAC-AE's first updates, spec §5) ---------------------------------------------


def main(args: Args, argv: list[str] = ()):
    """Train (or, with --eval-checkpoint, only evaluate); returns (final dict, agent, replay buffer or None)."""
    t_start = time.time()
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = run_utils.resume(args, argv, SCRIPT, vars(Args()))
    args, pretrained, env_name, action_repeat, learning_starts, device = validate(args, argv, ckpt)
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    env = make_env(env_name, args.seed, action_repeat, args.frames_per_input, args.episode_length)
    eval_env = make_env(env_name, args.seed + 10_000, action_repeat, args.frames_per_input, args.episode_length)
    obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
    agent = make_agent(obs_shape, action_dim, device, args.hidden_dim, args.feature_dim, args.policy_lr, args.q_lr,
                       args.alpha_lr, args.init_temperature, args.alpha_beta, args.encoder_lr, args.decoder_lr,
                       args.decoder_weight_lambda, pretrained)
    rb = ReplayBuffer(args.buffer_size, obs_shape, action_dim, device,
                      episode_len=math.ceil(args.episode_length / action_repeat))
    run = dmc_envs.start_run(args, SCRIPT, env_name, action_repeat, learning_starts, device, ckpt, t_start,
                             LOOP_START)
    loop = run.loop

    def invariance() -> dict:  # report question 2, on up to 256 replayed (state, action) pairs
        return measure_invariance(agent.critic, *rb.sample(min(args.batch_size, 256))[:2]) if len(rb) > 0 else {}

    run_evaluation = dmc_envs.evaluation(run, functools.partial(evaluate, agent.actor, eval_env, args.eval_episodes,
                                                                device), invariance)

    obs = dmc_envs.restore(ckpt, agent, rb, env, eval_env) if ckpt else env.reset(seed=args.seed)[0]
    checkpoint_state = functools.partial(dmc_envs.training_state, agent, rb, env, eval_env, pretrained=pretrained)

    while loop["global_step"] < args.total_timesteps:
        global_step = loop["global_step"]
        run.checkpoint_when_due(global_step, checkpoint_state)
        dmc_envs.evaluate_when_due(loop, global_step, args.eval_frequency, run_evaluation)
        # spec §1.2 order: choose the action, update, step the env, store the transition
        burst, loop["burst"] = loop["burst"], None  # set when resumed inside the first updates
        if burst is not None:
            action = burst["action"].numpy()
        elif global_step < learning_starts:
            action = env.action_space.sample()
        else:
            action = act(agent.actor, obs, device, sample=True)
        if global_step >= learning_starts:
            # SAC-AE runs one update per seed step at once when learning starts, then one per step (spec §5)
            updates = 1 if loop["updated"] else len(rb)
            for _ in dmc_envs.resumable_updates(run, global_step, updates, action, checkpoint_state, burst):
                loop["metrics"] |= update(agent, rb, loop["step"], args.batch_size, args.gamma, args.tau,
                                          args.policy_frequency, args.target_network_frequency, args.encoder_tau,
                                          args.decoder_frequency, args.decoder_latent_lambda)
            loop["updated"] = True
        next_obs, reward, terminated, truncated, info = env.step(action)
        # the time limit is a truncation: bootstrap through it, only a termination stops it (spec §6 item 5)
        rb.add(obs, action, reward, next_obs, not_done=float(not terminated), done=terminated or truncated)
        obs = next_obs
        if dmc_envs.end_step(run, reward, info["env_steps"], episode_over=terminated or truncated):
            obs, _ = env.reset()
    global_step = loop["global_step"]
    returns = dmc_envs.evaluate_when_due(loop, global_step, args.eval_frequency, run_evaluation, final=True)
    env.close()
    eval_env.close()
    run.save_model(agent=run_utils.parts_state(agent))
    # ae_mode and latent_stack: final.json as sac_ae_frozen.py's (one latent of the frame stack, trained jointly)
    final = run.finish(returns, k=1, m=1, ae_mode="joint", latent_stack=1, frames_per_input=args.frames_per_input,
                       action_repeat=action_repeat, total_timesteps=global_step)
    return final, agent, rb


# -- Run bookkeeping: validation, --encoder-path, --eval-checkpoint, the command line ---------------------------


def validate(args: Args, argv: list[str], ckpt: dict | None = None):
    """One-line errors for bad input, before anything is written; returns the args with --frames-per-input resolved,
    the pretrained autoencoder (--encoder-path, or a resumed run's copy of it), task name, action repeat, learning
    start and device."""
    optional = {"action_repeat": args.action_repeat, "frames_per_input": args.frames_per_input}
    run_utils.positive(total_timesteps=args.total_timesteps, batch_size=args.batch_size, buffer_size=args.buffer_size,
                       eval_episodes=args.eval_episodes, eval_frequency=args.eval_frequency,
                       episode_length=args.episode_length, decoder_frequency=args.decoder_frequency,
                       checkpoint_interval=args.checkpoint_interval,
                       **{name: value for name, value in optional.items() if value is not None})
    dmc_envs.resolve_env_id(args.env_id)  # the task first, then the encoder, then the schedule
    pretrained, k = ae_files.check_pretrained(args, ckpt, Encoder)
    env_name, action_repeat, learning_starts = dmc_envs.resolve_schedule(args)
    device = run_utils.check_run_flags(args, argv)
    return replace(args, frames_per_input=k), pretrained, env_name, action_repeat, learning_starts, device


def evaluate_checkpoint(args: Args, argv: list[str]):
    """--eval-checkpoint: a saved agent on its own task, action repeat and sizes; nothing is trained."""
    def build(saved: dict, ckpt: dict, env_name: str, action_repeat: int, device: torch.device):
        env = make_env(env_name, saved["seed"] + 10_000, action_repeat, saved["frames_per_input"],
                       saved["episode_length"])
        return env, make_agent(env.observation_space.shape, env.action_space.shape[0], device, saved["hidden_dim"],
                               saved["feature_dim"])
    return dmc_envs.evaluate_saved(args, argv, SCRIPT, build, evaluate, ae_mode="joint")


# the loop's counters at the start of a run (dmc_envs'); updated: the first updates ran; burst: set only while a
# checkpoint is written inside them (the step's action and the updates done, where a resumed run continues)
LOOP_START = {**dmc_envs.LOOP_START, "updated": False, "burst": None}


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, parsed by tyro (sweep.py checks each cell with it before starting anything)."""
    return tyro.cli(Args, args=argv)


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

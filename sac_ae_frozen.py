"""SAC+AE as the reproduction report ran it: SAC on the latents of a frozen pretrained encoder, on DeepMind Control.

The report's SAC+AE (its §2): pretrain_autoencoder.py's encoder e (--encoder-path) is frozen, each agent step's
newest frames go through it once, and the observation is z = [e(s_t-N+1), ..., e(s_t)], the latents of the last
N = --latent-stack (8) steps. SAC learns on z with sac_state.py's networks and constants (spec/ALGORITHMS.md §1,
"spec §x"); no gradient reaches e:

    y   = r + gamma not_done (min_i Q'_i(z', a') - alpha log pi(a' | z')), a' ~ pi(z')
    L_Q = sum_i mean_B (Q_i(z, a) - y)^2

and actor and temperature learn as in SAC, on z. `diff sac_pixels.py sac_ae_frozen.py` shows what the frozen encoder
changes (sac_ae.py: SAC+AE of Yarats et al., the encoder trained with the agent). Steps are env steps.

    python sac_ae_frozen.py --encoder-path runs_ae/<run>/encoder.pt   # the report's SAC+AE on cartpole-swingup
    python sac_ae_frozen.py --eval-checkpoint runs/<run>/model.pt     # evaluate a saved model, train nothing
"""
import copy
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import ae_files
import dmc_envs
import run_utils
import pretrain_autoencoder

SCRIPT = Path(__file__).stem
FEATURE_DIM = 50  # spec §1.1 feature_dim


@dataclass
class Args(dmc_envs.EnvArgs, run_utils.AgentRunArgs):
    exp_name: str = SCRIPT
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, python and the environment)"""

    # Algorithm (spec §1.2, §1.4, §6 items 4 and 7)
    total_timesteps: int = 500_000
    """env steps of training (the paper reports 100k and 500k)"""
    buffer_size: int = 100_000
    """replay capacity in transitions (agent steps) (spec §1.4)"""
    batch_size: int = 512
    """minibatch size: 512 in the paper's main results, 128 in the authors' config and ablations (spec §1.4)"""
    learning_starts: int | None = None
    """env steps of uniform random actions before the first update; default: 1000 agent steps (spec §1.4)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.01
    """soft-update rate of the target critic (spec §1.1)"""
    policy_lr: float = 1e-3
    """Adam learning rate of the actor (spec §1.4)"""
    q_lr: float = 1e-3
    """Adam learning rate of the critic (spec §1.4)"""
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
    encoder_path: str | None = None
    """encoder.pt of pretrain_autoencoder.py, frozen (required; report §2)"""
    latent_stack: int = 8
    """the observation is the latents of the last N agent steps (report §2)"""


# -- Networks (spec §1.1) ---------------------------------------------------------------------------------------


def weight_init(m: nn.Module) -> None:
    """Spec §1.1: orthogonal init, Linear gain 1, conv gain sqrt(2) (ReLU) on the whole kernel; biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        m.bias.data.fill_(0.0)


Encoder = pretrain_autoencoder.Encoder  # the frozen encoder's class: the pretraining's, which made its weights


class StateEncoder(nn.Module):
    """No encoder on states: the features are the observation vector itself, so Actor, Critic and the update are
    the pixel scripts' code unchanged."""

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.feature_dim = obs_shape[0]

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        return obs.float()


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


# -- Replay buffer: every step's latent stored once, on the training device -------------------------------------


class ReplayBuffer:
    """sac_pixels.py's buffer with a step's latent (`latent_dim` floats) as its "frame": transitions of stacks of S
    latents, each latent stored once (an episode's first latent once, not S times). Transition i keeps the ring slots
    of its S + 1 latents, oldest first: obs = latents 0..S-1, next obs = latents 1..S, gathered at sample time. The
    ring holds `capacity` latents plus one per episode of `episode_len` agent steps; a transition whose oldest latent
    is overwritten is never sampled."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_dim: int, device: torch.device,
                 episode_len: int = 1, latent_dim: int = FEATURE_DIM):
        self.capacity, self.device, self.stack = capacity, device, obs_shape[0] // latent_dim
        self.latent_dim = latent_dim
        self.num_frames = capacity + math.ceil(capacity / max(episode_len, 1)) + self.stack + 1
        self.frames = torch.empty((self.num_frames, latent_dim), dtype=torch.float32, device=device)
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
            self.current = [self.write_frame(obs[-self.latent_dim:])] * self.stack
        frames = self.current + [self.write_frame(next_obs[-self.latent_dim:])]
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
        """obs, action, reward, next_obs, not_done of buffer slots `idx`, obs stacks (n, S*D) of latents."""
        frames = self.frames[self.frame_idx[idx]]  # (n, S+1, D)
        obs, next_obs = frames[:, :-1].flatten(1), frames[:, 1:].flatten(1)
        return obs, self.actions[idx], self.rewards[idx], next_obs, self.not_dones[idx]

    def sample(self, batch_size: int):
        # uniform with replacement over the sampleable transitions, as the authors' replay_buffer.sample
        return self.get((self.start + torch.randint(0, len(self), (batch_size,), device=self.device)) % self.capacity)


# -- The SAC update (spec §1.2 with K = M = 1 and no augmentation) ----------------------------------------------


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
           policy_frequency: int = 2, target_network_frequency: int = 2) -> dict:
    """One SAC step at agent step `step` (spec §1.2) on raw replay samples. Returns tensors (no host sync)."""
    obs, action, reward, next_obs, not_done = rb.sample(batch_size)
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, gamma)
    if step % policy_frequency == 0:
        metrics.update(update_actor_and_alpha(agent, obs))
    if step % target_network_frequency == 0:
        soft_update(agent.critic_target, agent.critic, tau)
    return metrics


# -- Evaluation (spec §1.4) -------------------------------------------------------------------------------------


@torch.no_grad()
def act(actor: Actor, obs: np.ndarray, device: torch.device, sample: bool) -> np.ndarray:
    """Acting sees raw (unaugmented) observations: a policy sample while training, tanh(mu) when evaluating."""
    mu, log_std = actor(torch.as_tensor(obs, device=device).unsqueeze(0))
    action = sample_action(mu, log_std)[0] if sample else torch.tanh(mu)
    return action[0].cpu().numpy()


def evaluate(actor: Actor, env: dmc_envs.DMCEnv, episodes: int, device: torch.device, video_path: Path | None = None):
    """Returns of `episodes` deterministic episodes; the first is written to `video_path` (mp4) when given."""
    return dmc_envs.run_episodes(env, lambda obs: act(actor, obs, device, sample=False), episodes, video_path)


# -- The agent: sac_state.py's networks and optimizers (spec §1.1, §1.4) on the latent stack --------------------


@dataclass
class Agent:
    """What the update trains: actor, critic, target critic, temperature (MLPs; the frozen encoder is the env's)."""
    actor: Actor
    critic: Critic
    critic_target: Critic
    log_alpha: torch.Tensor
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    alpha_optimizer: torch.optim.Optimizer
    target_entropy: float


def make_agent(obs_shape: tuple[int, ...], action_dim: int, device: torch.device, hidden_dim: int = 1024,
               policy_lr: float = 1e-3, q_lr: float = 1e-3, alpha_lr: float = 1e-3,
               init_temperature: float = 0.1) -> Agent:
    actor = Actor(StateEncoder(obs_shape), action_dim, hidden_dim).to(device)
    critic = Critic(StateEncoder(obs_shape), action_dim, hidden_dim).to(device)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.tensor(math.log(init_temperature), device=device, requires_grad=True)
    return Agent(actor, critic, critic_target, log_alpha, torch.optim.Adam(actor.parameters(), lr=policy_lr),
                 torch.optim.Adam(critic.parameters(), lr=q_lr), torch.optim.Adam([log_alpha], lr=alpha_lr),
                 target_entropy=-float(action_dim))


# -- Environment: a dm_control task through dmc_envs.py (spec §1.4, §6 items 3 and 5) seen through the frozen encoder


def frozen_encoder(state_dict: dict, frames_per_input: int, device: torch.device) -> Encoder:
    """The pretrained weights in their own Encoder class (the DMC scripts' class, so they load bit-for-bit), with
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


def make_env(env_name: str, seed: int, action_repeat: int, encoder: Encoder, latent_stack: int, frames_per_input: int,
             episode_length: int, device: torch.device) -> LatentStackEnv:
    pixels = dmc_envs.make_env(env_name, seed, action_repeat, pixels=True, frame_stack=frames_per_input,
                               episode_length=episode_length)
    return LatentStackEnv(pixels, encoder, latent_stack, frames_per_input, device)


# -- The training loop (spec §1.2) ------------------------------------------------------------------------------


def main(args: Args, argv: list[str] = ()):
    """Train (or, with --eval-checkpoint, only evaluate); returns (final dict, agent, replay buffer or None)."""
    t_start = time.time()
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = run_utils.resume(args, argv, SCRIPT, vars(Args()))
    pretrained, env_name, action_repeat, learning_starts, device = validate(args, argv, ckpt)
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    if pretrained["env_id"] != env_name:
        print(f"note: the encoder was pretrained on {pretrained['env_id']}, not {env_name}", flush=True)
    k = pretrained["frames_per_input"]
    encoder = frozen_encoder(pretrained["encoder"], k, device)
    env = make_env(env_name, args.seed, action_repeat, encoder, args.latent_stack, k, args.episode_length, device)
    eval_env = make_env(env_name, args.seed + 10_000, action_repeat, encoder, args.latent_stack, k,
                        args.episode_length, device)
    obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
    agent = make_agent(obs_shape, action_dim, device, args.hidden_dim, args.policy_lr, args.q_lr, args.alpha_lr,
                       args.init_temperature)
    rb = ReplayBuffer(args.buffer_size, obs_shape, action_dim, device,
                      episode_len=math.ceil(args.episode_length / action_repeat), latent_dim=encoder.feature_dim)
    run = dmc_envs.start_run(args, SCRIPT, env_name, action_repeat, learning_starts, device, ckpt, t_start,
                             frames_per_input=k)
    loop = run.loop

    run_evaluation = dmc_envs.evaluation(run, functools.partial(evaluate, agent.actor, eval_env, args.eval_episodes,
                                                                device))

    obs = dmc_envs.restore(ckpt, agent, rb, env, eval_env) if ckpt else env.reset(seed=args.seed)[0]
    checkpoint_state = functools.partial(dmc_envs.training_state, agent, rb, env, eval_env, pretrained=pretrained)

    while loop["global_step"] < args.total_timesteps:
        global_step = loop["global_step"]
        run.checkpoint_when_due(global_step, checkpoint_state)
        dmc_envs.evaluate_when_due(loop, global_step, args.eval_frequency, run_evaluation)
        # spec §1.2 order: choose the action, update, step the env, store the transition
        if global_step < learning_starts:
            action = env.action_space.sample()
        else:
            action = act(agent.actor, obs, device, sample=True)
            loop["metrics"] |= update(agent, rb, loop["step"], args.batch_size, args.gamma, args.tau,
                                      args.policy_frequency, args.target_network_frequency)
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
    # the encoder's weights travel along, so --eval-checkpoint needs no encoder file
    run.save_model(agent=run_utils.parts_state(agent), pretrained=pretrained)
    final = run.finish(returns, k=1, m=1, ae_mode="frozen", latent_stack=args.latent_stack, frames_per_input=k,
                       action_repeat=action_repeat, total_timesteps=global_step)
    return final, agent, rb


# -- Run bookkeeping: validation, --encoder-path, --eval-checkpoint, the command line ---------------------------


def validate(args: Args, argv: list[str], ckpt: dict | None = None):
    """One-line errors for bad input, before anything is written; returns the pretrained autoencoder (--encoder-path,
    or a resumed run's copy of it) and the resolved settings: task name, action repeat, learning start, device."""
    run_utils.positive(total_timesteps=args.total_timesteps, batch_size=args.batch_size, buffer_size=args.buffer_size,
                       eval_episodes=args.eval_episodes, eval_frequency=args.eval_frequency,
                       episode_length=args.episode_length, latent_stack=args.latent_stack,
                       checkpoint_interval=args.checkpoint_interval)
    dmc_envs.resolve_env_id(args.env_id)  # the task and --action-repeat first, the encoder, then the schedule
    if args.action_repeat is not None:
        run_utils.positive(action_repeat=args.action_repeat)
    run_utils.require(ckpt or args.encoder_path, "sac_ae_frozen.py needs --encoder-path (an encoder.pt of "
                      "pretrain_autoencoder.py)")
    pretrained = ckpt["pretrained"] if ckpt else ae_files.load_encoder_checkpoint(args.encoder_path, Encoder)
    env_name, action_repeat, learning_starts = dmc_envs.resolve_schedule(args)
    return pretrained, env_name, action_repeat, learning_starts, run_utils.check_run_flags(args, argv)


def evaluate_checkpoint(args: Args, argv: list[str]):
    """--eval-checkpoint: the agent of a model.pt or checkpoint.pt on its own task, action repeat and frozen encoder
    (inside the file); nothing is trained."""
    def build(saved: dict, ckpt: dict, env_name: str, action_repeat: int, device: torch.device):
        k = ckpt["pretrained"]["frames_per_input"]
        env = make_env(env_name, saved["seed"] + 10_000, action_repeat,
                       frozen_encoder(ckpt["pretrained"]["encoder"], k, device), saved["latent_stack"], k,
                       saved["episode_length"], device)
        return env, make_agent(env.observation_space.shape, env.action_space.shape[0], device, saved["hidden_dim"])
    return dmc_envs.evaluate_saved(args, argv, SCRIPT, build, evaluate, ae_mode="frozen")


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, parsed by tyro (sweep.py checks each cell with it before starting anything)."""
    return tyro.cli(Args, args=argv)


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

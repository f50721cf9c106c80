"""NDDQN on Atari 100k: n-step double dueling DQN, the "Efficient DQN" baseline of DrQ on Atari.

Kostrikov, Yarats & Fergus, "Image Augmentation Is All You Need" (ICLR 2021), section 5.3, and spec §2.
Every constant follows spec/ALGORITHMS.md (cited as "spec §x"); `diff nddqn_atari.py drq_dqn.py`
shows exactly what DrQ adds to the baseline. A named recipe of the Atari recipe table (spec §2.7) comes first,
flags after it override its values; `--help` lists the recipes.
"""
import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import atari_envs
import run_utils

SCRIPT = Path(__file__).stem

# dopamine's Atari 100k agent as it produced the published DrQ(eps) scores (labs/atari_100k at 8de9df0); spec §2.7
# cites the file of every value, and each value is a flag of its own
DOPAMINE_EPS = dict(end_e=0.01, eval_epsilon=0.001, conv_padding="same", noop_mode="dopamine",
                    life_loss_ends_frame_skip=True, max_episode_frames=0, max_episode_steps=27_000,
                    finish_last_game=True, buffer_size=1_000_000, truncated_windows="drop", replay_sampling="dopamine",
                    step_counting="dopamine")
# The Atari recipes (tyro subcommands), one table shared by both scripts: name -> (script, description, values).
# A script's first recipe is its default.
RECIPES = {
    "efficient-dqn": ("nddqn_atari", "the DrQ paper's Efficient DQN baseline, DrQ without augmentation (spec §2.1)",
                      {}),
    "efficient-dqn-eps": ("nddqn_atari", "dopamine's configs/DrQ_eps.gin with data_augmentation = False (spec §2.7)",
                          DOPAMINE_EPS),
    "drq": ("drq_dqn", "DrQ with the paper's Atari settings (spec §2.1-2.4)", {}),
    "drq-eps": ("drq_dqn", "DrQ(eps): dopamine's configs/DrQ_eps.gin and agent, value for value (spec §2.7)",
                {**DOPAMINE_EPS, "intensity_scale": 0.05, "shift_range": "asymmetric", "shift_per": "batch"}),
}
DEFAULT_RECIPE = next(name for name, (script, _, _) in RECIPES.items() if script == SCRIPT)


@dataclass
class Args(run_utils.RunArgs):
    recipe: tyro.conf.Suppress[str] = DEFAULT_RECIPE
    """the named recipe these values start from (a subcommand; spec §2.7), recorded in args.json"""
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, python and the environment)"""
    capture_video: bool = False
    """if toggled, record the first final-evaluation game to runs/{run_name}/videos"""
    save_model: bool = False
    """if toggled, save the trained Q-network and its optimizer to runs/{run_name}/model.pt"""
    eval_checkpoint: str | None = None
    """path of a model.pt or checkpoint.pt of this script to load and evaluate; no training happens"""
    checkpoint_interval: int = 10_000
    """agent steps between full-state checkpoints (network, optimizer, replay, RNG and game state) in runs/{run_name}/checkpoint.pt; SIGINT/SIGTERM also write one"""
    log_interval: int = 1000
    """agent steps between loss/SPS log points and progress lines (the only host syncs of the training loop)"""

    # Environment (spec §2.3, §2.7, §6 item 9)
    env_id: str = "Breakout"
    """Atari game: `Breakout` or `BreakoutNoFrameskip-v4` (no sticky actions, minimal action set)"""
    noop_max: int = 30
    """up to this many no-op actions at the start of every game (spec §2.3 runner)"""
    noop_mode: Literal["gymnasium", "dopamine"] = "gymnasium"
    """`gymnasium`: 1..noop_max no-op frames, then the frame after them; `dopamine`: 0..noop_max-1 raw ALE no-ops,
    and the game starts from the frame before them (its runner's _run_no_ops, spec §2.7)"""
    life_loss_ends_frame_skip: bool = False
    """if toggled, a life loss ends the agent step's 4-frame skip at once (dopamine's AtariPreprocessing, spec §2.7)"""
    max_episode_frames: int = 108_000
    """a game is cut (truncated) after this many ALE frames, no-op frames included (27k agent steps); 0 = no cap"""
    max_episode_steps: int = 0
    """if > 0, a game is cut after this many agent steps (dopamine's max_steps_per_episode 27000, spec §2.7)"""

    # Algorithm (spec §2.3 DrQ.gin / DrQ_eps.gin, §2.7, §6 item 8)
    total_timesteps: int = 100_000
    """agent steps of training; each is 4 frames, so 100k steps = 400k frames (spec §6 item 9)"""
    finish_last_game: bool = False
    """if toggled, train on past total_timesteps until the game then running ends (dopamine's Runner, spec §2.7)"""
    buffer_size: int = 100_000
    """replay capacity in transitions; 100k = every transition of the run; dopamine's "unbounded" proxy is 1M"""
    truncated_windows: Literal["bootstrap", "drop"] = "bootstrap"
    """n-step windows that reach a game cut: `bootstrap` from the game's last frame, or `drop` them from sampling
    (dopamine's is_valid_transition, spec §2.7)"""
    replay_sampling: Literal["iid", "dopamine"] = "iid"
    """`iid`: uniform draws with replacement; `dopamine`: one draw in each 1/batch_size stratum of the stored
    transitions, invalid ones redrawn uniformly (its prioritized buffer at unit priorities, spec §2.7)"""
    step_counting: Literal["agent", "dopamine"] = "agent"
    """`dopamine`: epsilon, the first and the last update follow dopamine's agent's counters (spec §2.7)"""
    learning_rate: float = 1e-4
    """Adam learning rate (spec §2.3, from DER)"""
    adam_eps: float = 1.5e-4
    """Adam epsilon (spec §2.3, from DER)"""
    gamma: float = 0.99
    """discount factor"""
    n_step: int = 10
    """multi-step return horizon (spec §2.2: n = 10, not DER's 20)"""
    target_network_frequency: int = 1
    """updates between target-network syncs; 1 = synced every step (spec §2.3 target_update_period)"""
    batch_size: int = 32
    """minibatch size"""
    learning_starts: int = 1600
    """agent steps of pure exploration before the first update (spec §2.3 min_replay_history)"""
    train_frequency: int = 1
    """agent steps between updates (spec §2.3 update_period)"""
    start_e: float = 1.0
    """epsilon while no learning happens and at the start of the decay"""
    end_e: float = 0.1
    """final training epsilon: 0.1 for DrQ as published, 0.01 for DrQ(eps) (spec §2.2)"""
    exploration_steps: int = 5000
    """agent steps of linear epsilon decay after learning starts (spec §2.3 epsilon_decay_period)"""
    max_grad_norm: float = 0.0
    """clip the gradient norm to this value; 0 = no clipping as in dopamine (the DrQ appendix may say 10, spec §2.4)"""
    conv_padding: Literal["valid", "same"] = "valid"
    """Nature-CNN padding: `valid` (Nature DQN, 3136 features) or `same` (flax's default in dopamine: TF SAME per
    layer, 7744 features, spec §2.7)"""

    # Final evaluation (spec §2.2, §6 item 9)
    eval_episodes: int = 100
    """complete games (all lives) played by the final policy"""
    eval_steps: int = 0
    """if > 0, evaluate for at least this many agent steps of complete games instead (the paper's 125000)"""
    eval_epsilon: float = 0.05
    """evaluation epsilon: 0.05 for DrQ as published, 0.001 for DrQ(eps); 1.0 plays uniformly at random"""


# ---------------------------------------------------------------------------------------------------------------
# The agent's frame stack (spec §2.3)


class FrameStack:
    """The agent's 4-frame state. It restarts from zeros at every new game and every life loss (dopamine's
    reset_one, spec §2.3), exactly as the replay buffer pads stacks at a segment start."""

    def __init__(self, n: int, device: torch.device):
        self.frames = torch.zeros((n, 84, 84), dtype=torch.uint8, device=device)

    def reset(self, frame: np.ndarray) -> torch.Tensor:
        self.frames.zero_()
        return self.push(frame)

    def push(self, frame: np.ndarray) -> torch.Tensor:
        self.frames = torch.roll(self.frames, -1, 0)
        self.frames[-1] = torch.as_tensor(frame, device=self.frames.device)
        return self.frames


# ---------------------------------------------------------------------------------------------------------------
# Network, replay buffer, update


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/flax SAME padding of one axis: the output has ceil(size / stride) positions, the padding they need is split
    with the extra pixel after (bottom, right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class QNetwork(nn.Module):
    """Nature CNN (32-8x8/4, 64-4x4/2, 64-3x3/1) -> one shared 512-unit layer -> dueling heads
    Q = V + A - mean(A); xavier-uniform weights and zero biases as in dopamine's network (spec §2.3)."""

    def __init__(self, n_actions: int, frame_stack: int = 4, padding: str = "valid"):
        super().__init__()
        layers, size = [], 84
        for c_in, c_out, kernel, stride in ((frame_stack, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)):
            if padding == "same":  # TF/flax SAME: the odd pixel goes after (84 -> 21 -> 11 -> 11, spec §2.7)
                before, after = same_padding(size, kernel, stride)
                layers.append(nn.ZeroPad2d((before, after, before, after)))
                size = math.ceil(size / stride)
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=stride), nn.ReLU()]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, frame_stack, 84, 84)).shape[1]
        self.hidden = nn.Sequential(nn.Linear(n_flat, 512), nn.ReLU())
        self.advantage = nn.Linear(512, n_actions)
        self.value = nn.Linear(512, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(self.convs(x.float() / 255.0))
        adv = self.advantage(h)
        return self.value(h) + adv - adv.mean(dim=1, keepdim=True)


def linear_schedule(step: int, learning_starts: int, decay_steps: int, start_e: float, end_e: float) -> float:
    """Dopamine's linearly_decaying_epsilon: start_e until learning starts, then linear to end_e over decay_steps."""
    if step < learning_starts:
        return start_e
    return max(end_e, start_e - (start_e - end_e) * (step - learning_starts) / decay_steps)


class ReplayBuffer:
    """Frame-once n-step replay on the training device.

    Row i holds the newest 84x84 frame of state s_i, the action a_i, the clipped reward r_i and whether the
    transition ended a segment as terminal (life loss or game over: terminal for the learner only). `first[i]`
    marks the first row of a segment: stack positions before it are zero, never frames of the previous life or
    game. A game cut by the frame limit (truncation) gets one extra row holding its last frame, with no action,
    so windows that reach the cut bootstrap from the true last state. Stacks, n-step returns and bootstrap
    discounts are assembled at sample time with tensor ops. 100k transitions take 100k * 7056 B = 0.71 GB.

    truncated_windows="drop" and sampling="dopamine" follow dopamine's replay instead (spec §2.7). Its buffer writes
    3 zero frames ("slots") before every segment's first transition and judges windows in those slots: `slot_count`
    is its add_count, and the newest transitions' slots are kept to apply its rules exactly."""

    def __init__(self, capacity: int, n_step: int, gamma: float, frame_stack: int, device: torch.device,
                 truncated_windows: str = "bootstrap", sampling: str = "iid"):
        self.capacity, self.n_step, self.gamma, self.stack, self.device = capacity, n_step, gamma, frame_stack, device
        self.truncated_windows, self.sampling = truncated_windows, sampling
        self.frames = torch.zeros((capacity, 84, 84), dtype=torch.uint8, device=device)
        self.actions = torch.zeros(capacity, dtype=torch.long, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminals = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.first = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.has_action = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.count = 0  # rows ever written; row r lives at r % capacity
        self.final_rows: list[int] = []  # absolute rows without an action (truncations)
        self.skip_rows: list[int] = []  # sorted absolute rows never sampled: final rows, and dropped windows' starts
        self._skip_cache: tuple[list[int], torch.Tensor] = ([], torch.zeros(0, dtype=torch.long, device=device))
        self.slot_count = 0
        self.recent_slots: list[tuple[int, int]] = []  # (row, slot) of the newest n_step + 1 transitions
        self.discounts = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=device)

    def _write(self, frame, action: int, reward: float, terminal: bool, first: bool, has_action: bool) -> None:
        i = self.count % self.capacity
        self.frames[i] = torch.as_tensor(frame, device=self.device)
        self.actions[i], self.rewards[i] = action, reward
        self.terminals[i], self.first[i], self.has_action[i] = terminal, first, has_action
        self.count += 1

    def add(self, frame, action: int, reward: float, terminal: bool, first: bool) -> None:
        self.slot_count += 1 + (self.stack - 1) * first
        self.recent_slots = self.recent_slots[-self.n_step:] + [(self.count, self.slot_count - 1)]
        self._write(frame, action, reward, terminal, first, True)

    def add_final(self, frame) -> None:
        dropped = set()
        if self.truncated_windows == "drop":
            # dopamine's is_valid_transition rejects a transition whose n slots hold a non-terminal episode end
            cut = self.recent_slots[-1][1]
            dropped = {row for row, slot in self.recent_slots if slot > cut - self.n_step}
        self.skip_rows = sorted(set(self.skip_rows) | dropped | {self.count})
        self.final_rows.append(self.count)
        self._write(frame, 0, 0.0, False, False, False)

    def sample_range(self) -> tuple[int, int]:
        """Absolute rows [lo, hi] that may start a transition: the n-step window (and the bootstrap row) is already
        written, and the stack's older frames are not yet overwritten."""
        return max(0, self.count - self.capacity + self.stack - 1), self.count - 1 - self.n_step

    def stacks(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) absolute rows -> (B, stack, 84, 84) states, zero before the segment's first row."""
        offsets = torch.arange(-self.stack + 1, 1, device=self.device)
        window = (rows[:, None] + offsets) % self.capacity
        # position j is zeroed when any later position in the window starts a segment
        later_first = self.first[window[:, 1:]].flip(1).cummax(1).values.flip(1)
        keep = torch.cat([~later_first, torch.ones_like(later_first[:, :1])], dim=1)
        return self.frames[window] * keep[:, :, None, None]

    def sample_rows(self, batch_size: int) -> torch.Tensor:
        """Uniform over samplable rows, skipping skip_rows exactly (searchsorted over their sorted positions)."""
        lo, hi = self.sample_range()
        self.final_rows = [r for r in self.final_rows if r >= lo]
        self.skip_rows = [r for r in self.skip_rows if r >= lo]
        if self.sampling == "dopamine":
            return self._sample_rows_dopamine(batch_size, lo)
        skips = self._skip_tensor([r for r in self.skip_rows if r <= hi])
        n = hi - lo + 1 - len(skips)
        if n <= 0:
            raise RuntimeError("the replay buffer holds no complete n-step transition yet")
        return lo + self._skip(torch.randint(0, n, (batch_size,), device=self.device), skips - lo)

    def _skip_tensor(self, rows: list[int]) -> torch.Tensor:
        if rows != self._skip_cache[0]:  # rebuilt only when a row enters or leaves the range: no host sync per draw
            self._skip_cache = (rows, torch.tensor(rows, dtype=torch.long, device=self.device))
        return self._skip_cache[1]

    def _skip(self, v: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
        """The v-th offset that is not in `skipped` (sorted offsets)."""
        if len(skipped):
            v = v + torch.searchsorted(skipped - torch.arange(len(skipped), device=self.device), v, right=True)
        return v

    def _sample_rows_dopamine(self, batch_size: int, lo: int) -> torch.Tensor:
        """dopamine's prioritized buffer at unit priorities (sum_tree.stratified_sample, sample_index_batch): one draw
        in each of batch_size equal strata of the stored transitions in storage order; an invalid draw is replaced
        by uniform draws until valid. Invalid: in the newest n slots (zero slots count), or in skip_rows. Exact while
        no row has been overwritten, as with dopamine's 1M capacity."""
        finals = torch.tensor(self.final_rows, dtype=torch.long, device=self.device) - lo
        n = self.count - lo - len(finals)  # stored transitions
        newest = max((row for row, slot in self.recent_slots if slot < self.slot_count - self.n_step), default=-1)
        if newest < lo:
            raise RuntimeError("the replay buffer holds no complete n-step transition yet")
        skip = torch.tensor(self.skip_rows, dtype=torch.long, device=self.device)
        strata = (torch.arange(batch_size, device=self.device) + torch.rand(batch_size, device=self.device,
                                                                             dtype=torch.float64)) / batch_size
        rows = lo + self._skip((strata * n).long().clamp(max=n - 1), finals)
        invalid = (rows > newest) | torch.isin(rows, skip)
        while invalid.any():
            redraw = torch.randint(0, n, (int(invalid.sum()),), device=self.device)
            rows[invalid] = lo + self._skip(redraw, finals)
            invalid = (rows > newest) | torch.isin(rows, skip)
        return rows

    def sample(self, batch_size: int, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """obs, action, n-step return G = sum_k gamma^k r_{t+k} (stopping at a segment end), the bootstrap
        discount gamma^L (0 after a terminal) and the state s_{t+L} it multiplies."""
        if rows is None:
            rows = self.sample_rows(batch_size)
        steps = rows[:, None] + torch.arange(self.n_step, device=self.device)
        idx = steps % self.capacity
        # a window ends after step j at a terminal, or before a truncation row (which has no action)
        ends = self.terminals[idx] | ~self.has_action[(steps + 1) % self.capacity]
        ended_before = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1).cummax(1).values
        included = (~ended_before).float()
        returns = (included * self.discounts[: self.n_step] * self.rewards[idx]).sum(1)
        length = included.sum(1).long()
        last = idx.gather(1, (length - 1)[:, None]).squeeze(1)
        discount = self.discounts[length] * (~self.terminals[last]).float()
        return {"obs": self.stacks(rows), "actions": self.actions[rows % self.capacity], "returns": returns,
                "discounts": discount, "next_obs": self.stacks(rows + length)}

    def state_dict(self) -> dict:
        """What a checkpoint needs: the written rows (uint8 frames as stored) and the bookkeeping lists."""
        n = min(self.count, self.capacity)
        return {name: getattr(self, name)[:n] for name in self.ARRAYS} | {
            "count": self.count, "final_rows": self.final_rows, "skip_rows": self.skip_rows,
            "slot_count": self.slot_count, "recent_slots": self.recent_slots}

    def load_state_dict(self, state: dict) -> None:
        for name in self.ARRAYS:
            getattr(self, name)[: len(state[name])] = state[name]
        self.count, self.final_rows, self.skip_rows = state["count"], state["final_rows"], state["skip_rows"]
        self.slot_count, self.recent_slots = state["slot_count"], [tuple(r) for r in state["recent_slots"]]

    ARRAYS = ("frames", "actions", "rewards", "terminals", "first", "has_action")


def td_loss(q_network: QNetwork, target_network: QNetwork, batch: dict[str, torch.Tensor],
            args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber loss of Q(s, a) against the double-DQN n-step target G + gamma^L Q_target(s', argmax_a Q(s', a)).
    The baseline: Q and its target see the replayed frames as they are."""
    with torch.no_grad():
        next_obs = batch["next_obs"]
        next_q_online = q_network(next_obs)
        # with a target synced every step the target network *is* the online one: skip the duplicate forward pass
        next_q_target = next_q_online if target_network is q_network else target_network(next_obs)
        next_actions = next_q_online.argmax(dim=1, keepdim=True)
        next_q = next_q_target.gather(1, next_actions).squeeze(1)
        target = batch["returns"] + batch["discounts"] * next_q
    obs = batch["obs"]
    q = q_network(obs).gather(1, batch["actions"][:, None]).squeeze(1)
    return F.smooth_l1_loss(q, target), q


def update(q_network: QNetwork, target_network: QNetwork, optimizer: torch.optim.Optimizer,
           batch: dict[str, torch.Tensor], args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    loss, q = td_loss(q_network, target_network, batch, args)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if args.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
    optimizer.step()
    return loss.detach(), q.detach().mean()


def make_target_network(q_network: QNetwork, args: Args) -> QNetwork:
    """target_network_frequency 1 (spec §2.3) syncs after every update, so the target that the next update uses
    equals the online network: return the online network itself rather than a copy that always matches it."""
    if args.target_network_frequency == 1:
        return q_network
    return copy.deepcopy(q_network).requires_grad_(False)


@torch.no_grad()
def sync_target(target_network: QNetwork, q_network: QNetwork) -> None:
    torch._foreach_copy_(list(target_network.parameters()), list(q_network.parameters()))


# ---------------------------------------------------------------------------------------------------------------
# Evaluation (spec §2.2, §6 item 9)


def epsilon_greedy(q_network: QNetwork, state: torch.Tensor, epsilon: float, rng: np.random.Generator) -> int:
    """Acting on the raw (unaugmented) stack, in training and evaluation alike; epsilon 1.0 never runs the network."""
    if rng.random() < epsilon:
        return int(rng.integers(q_network.advantage.out_features))
    with torch.no_grad():
        return int(q_network(state[None]).argmax(1).item())


def evaluate(q_network: QNetwork, env_id: str, seed: int, episodes: int, min_steps: int, epsilon: float,
             device: torch.device, video_dir: str | None = None, max_episode_steps: int = 0,
             interrupts: run_utils.Interrupts | None = None, **env_options) -> tuple[list[float], int] | None:
    """Plays complete games (all lives, until game over or the frame or step cap) with an epsilon-greedy policy on
    raw frames and returns their undiscounted, unclipped scores and the agent steps used. With min_steps > 0 it plays
    complete games until at least min_steps agent steps are done (dopamine's step-based protocol), else `episodes`
    games. A life loss restarts the agent's frame stack (as in training) but not the game. Returns None when
    `interrupts` asks to stop (the evaluation is then redone on resume), and prints a line every ~20 s."""
    env = atari_envs.make_env(env_id, seed, video_dir=video_dir, **env_options)
    rng = np.random.default_rng(seed)
    stack = FrameStack(4, device)
    returns, steps = [], 0
    frame, info = env.reset(seed=seed)
    state, lives, score, length = stack.reset(frame), info["lives"], 0.0, 0
    q_network.eval()
    progress = run_utils.Progress(min_steps if min_steps > 0 else episodes, 0)
    while (steps < min_steps) if min_steps > 0 else (len(returns) < episodes):
        if interrupts is not None and interrupts.requested:
            env.close()
            q_network.train()
            return None
        if progress.due():
            progress.last_line = time.time()
            print(f"  evaluation: {len(returns)} games, {steps} agent steps", flush=True)
        frame, reward, terminated, truncated, info = env.step(epsilon_greedy(q_network, state, epsilon, rng))
        score, length, steps = score + float(reward), length + 1, steps + 1
        if terminated or truncated or length == max_episode_steps:
            returns.append(score)
            frame, info = env.reset()
            state, lives, score, length = stack.reset(frame), info["lives"], 0.0, 0
        elif info["lives"] < lives:
            state, lives = stack.reset(frame), info["lives"]
        else:
            state = stack.push(frame)
    q_network.train()
    env.close()
    return returns, steps


def validate(args: Args, argv: list[str]) -> dict:
    """One-line errors for bad input, before anything is written; returns the resolved settings."""
    run_utils.positive(total_timesteps=args.total_timesteps, batch_size=args.batch_size, buffer_size=args.buffer_size,
                       n_step=args.n_step, checkpoint_interval=args.checkpoint_interval,
                       log_interval=args.log_interval, train_frequency=args.train_frequency)
    env_id = atari_envs.resolve_env_id(args.env_id)
    run_utils.require(args.n_step < args.learning_starts < args.total_timesteps,
                      f"--learning-starts {args.learning_starts} must exceed --n-step {args.n_step} (a complete n-step "
                      f"transition must exist when updates begin) and be below --total-timesteps {args.total_timesteps}")
    run_utils.require(args.batch_size <= min(args.learning_starts, args.buffer_size),
                      f"--batch-size {args.batch_size} is larger than the "
                      f"{min(args.learning_starts, args.buffer_size)} transitions the buffer holds when updates start")
    run_utils.require(args.buffer_size > args.n_step + 4, f"--buffer-size {args.buffer_size} cannot hold an n-step "
                      "transition")
    run_utils.require(0.0 <= args.eval_epsilon <= 1.0 and 0.0 <= args.end_e <= 1.0,
                      "--eval-epsilon and --end-e must lie in [0, 1]")
    run_utils.require(args.eval_episodes >= 1 or args.eval_steps >= 1,
                      "--eval-episodes must be positive (or set --eval-steps)")
    run_utils.require(min(args.noop_max, args.max_episode_frames, args.max_episode_steps) >= 0,
                      "--noop-max, --max-episode-frames and --max-episode-steps must be >= 0")
    run_utils.check_runs_dir(args.runs_dir)
    run_utils.check_tracking(args.track, args.wandb_mode)
    return {"env_id": env_id, "device": run_utils.get_device(args.cuda, "--cuda" in argv)}


def env_options(args: Args) -> dict:
    """atari_envs.make_env's settings from the flags, for training and evaluation alike."""
    return {"noop_max": args.noop_max, "max_episode_frames": args.max_episode_frames, "noop_mode": args.noop_mode,
            "life_loss_ends_frame_skip": args.life_loss_ends_frame_skip}


def learns_now(step: int, rb: ReplayBuffer, last_step: bool, args: Args) -> bool:
    """Whether an update follows the transition of agent step `step`. Counting agent steps: from step learning_starts
    on, every train_frequency steps. Counting as dopamine's agent does (spec §2.7): it trains before each action, so
    never after the run's last transition; its step counter runs one ahead of ours; and it compares
    min_replay_history with its buffer's add_count, which counts 3 zero slots before every segment."""
    if args.step_counting == "agent":
        return step >= args.learning_starts and step % args.train_frequency == 0
    return not last_step and rb.slot_count > args.learning_starts and (step + 1) % args.train_frequency == 0


def final_evaluation(q_network, args, env_id, device, logger, trained_steps, start_time, interrupts=None):
    """The final evaluation (spec §2.2); None when interrupted."""
    video_dir = str(logger.dir / "videos") if args.capture_video else None
    what = f"{args.eval_steps} agent steps of complete games" if args.eval_steps > 0 else f"{args.eval_episodes} games"
    print(f"final evaluation: {what} at epsilon {args.eval_epsilon} ...", flush=True)
    t0 = time.time()
    result = evaluate(q_network, env_id, args.seed + 10_000, args.eval_episodes, args.eval_steps, args.eval_epsilon,
                      device, video_dir, args.max_episode_steps, interrupts, **env_options(args))
    if result is None:
        return None
    returns, steps = result
    mean_return = float(np.mean(returns)) if returns else float("nan")
    final = {"env_id": env_id, "algo": args.exp_name, "recipe": args.recipe, "seed": args.seed,
             "total_timesteps": trained_steps, "eval_episodes": len(returns), "eval_steps": steps,
             "eval_epsilon": args.eval_epsilon, "end_e": args.end_e, "mean_return": mean_return,
             "std_return": float(np.std(returns)) if returns else float("nan"), "returns": returns,
             "hns": atari_envs.human_normalized_score(env_id.removesuffix("NoFrameskip-v4"), mean_return),
             "wall_time_s": time.time() - start_time, "run_name": logger.header["run_name"]}
    if args.eval_checkpoint:
        final["evaluated_checkpoint"] = str(args.eval_checkpoint)
    path = logger.finish(final)
    print(f"final evaluation: {len(returns)} games in {time.time() - t0:.0f} s, mean return {mean_return:.1f}, "
          f"HNS {final['hns']} -> {path}", flush=True)
    return final


def evaluate_checkpoint(args: Args, argv: list[str]) -> dict:
    """--eval-checkpoint: evaluate the network of a model.pt or checkpoint.pt of this script; nothing is trained."""
    start_time = time.time()
    ckpt = run_utils.load_checkpoint(args.eval_checkpoint, SCRIPT)
    cfg = validate(args, argv)
    env_id, device = cfg["env_id"], cfg["device"]
    saved = ckpt["args"]
    if atari_envs.resolve_env_id(saved["env_id"]) != env_id:
        run_utils.fail(f"checkpoint was trained on {atari_envs.resolve_env_id(saved['env_id'])}, not {env_id}")
    env = atari_envs.make_env(env_id, args.seed, **env_options(args))
    q_network = QNetwork(env.action_space.n, padding=saved["conv_padding"]).to(device)
    q_network.load_state_dict(ckpt["agent"]["q_network"])
    env.close()
    run_name = f"{env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    logger = run_utils.RunLogger(args, Path(args.runs_dir) / run_name,
                                 run_utils.run_record(args, SCRIPT, run_name, device))
    return final_evaluation(q_network, args, env_id, device, logger, ckpt["loop"]["global_step"], start_time)


def main(args: Args, argv: list[str] = ()) -> dict:
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = None
    if args.resume:
        ckpt = run_utils.load_checkpoint(Path(args.resume) / run_utils.CHECKPOINT, SCRIPT)
        args = run_utils.resume_args(args, ckpt, argv, vars(Args()))
    cfg = validate(args, argv)
    env_id, device = cfg["env_id"], cfg["device"]
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    run_name = ckpt["run_name"] if ckpt else f"{env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.resume) if ckpt else Path(args.runs_dir) / run_name
    evaluation = f"{args.eval_steps} agent steps" if args.eval_steps > 0 else f"{args.eval_episodes} games"
    run_utils.announce(f"{SCRIPT} ({args.recipe})", env_id, device, run_dir,
                       f"{args.total_timesteps} agent steps, learning from step {args.learning_starts}, then a final "
                       f"evaluation of {evaluation}" + (f", resuming at step {ckpt['loop']['global_step']}" if ckpt else ""))
    start_time = time.time()
    env = atari_envs.make_env(env_id, args.seed, **env_options(args))
    q_network = QNetwork(env.action_space.n, padding=args.conv_padding).to(device)
    target_network = make_target_network(q_network, args)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    rb = ReplayBuffer(args.buffer_size, args.n_step, args.gamma, 4, device, args.truncated_windows,
                      args.replay_sampling)
    stack = FrameStack(4, device)
    rng = np.random.default_rng(args.seed)
    logger = run_utils.RunLogger(args, run_dir, run_utils.run_record(args, SCRIPT, run_name, device),
                                 resume=ckpt["logger"] if ckpt else None)
    interrupts = run_utils.Interrupts()

    def agent_state() -> dict:
        return {"q_network": q_network.state_dict(), "optimizer": optimizer.state_dict(),
                "target_network": None if target_network is q_network else target_network.state_dict()}

    if ckpt:
        q_network.load_state_dict(ckpt["agent"]["q_network"])
        optimizer.load_state_dict(ckpt["agent"]["optimizer"])
        if target_network is not q_network:
            target_network.load_state_dict(ckpt["agent"]["target_network"])
        rb.load_state_dict(ckpt["replay"])
        env.restore(ckpt["env"])
        stack.frames.copy_(ckpt["stack"])
        rng.bit_generator.state = run_utils.numpy_state(ckpt["acting_rng"])
        loop = ckpt["loop"]
        run_utils.set_rng_state(ckpt["rng"])
    else:
        frame, info = env.reset(seed=args.seed)
        stack.reset(frame)
        loop = {"global_step": 0, "frame": torch.as_tensor(frame), "lives": info["lives"], "first": True,
                "score": 0.0, "length": 0, "recent": [], "loss": None, "q_mean": None, "game_ended": False,
                "next_checkpoint": args.checkpoint_interval, "elapsed": 0.0}
    start_time -= loop["elapsed"]
    progress = run_utils.Progress(args.total_timesteps, args.learning_starts, loop["global_step"])

    def checkpoint() -> Path:
        path = run_dir / run_utils.CHECKPOINT
        run_utils.save_checkpoint(path, SCRIPT, {
            "args": vars(args), "run_name": run_name, "agent": agent_state(), "replay": rb.state_dict(),
            "env": env.snapshot(), "stack": stack.frames, "acting_rng": rng.bit_generator.state,
            "rng": run_utils.rng_state(), "loop": {**loop, "elapsed": time.time() - start_time},
            "logger": logger.position()})
        return path

    state, frame = stack.frames, loop["frame"].numpy()
    # with --finish-last-game, as dopamine's Runner: the game running at total_timesteps is played (and learnt) out
    while loop["global_step"] < args.total_timesteps or (args.finish_last_game and not loop["game_ended"]):
        global_step = loop["global_step"]
        if interrupts.requested or global_step >= loop["next_checkpoint"]:
            loop["frame"] = torch.as_tensor(frame)
            path = checkpoint()
            if interrupts.requested:
                interrupts.exit(global_step, path, run_utils.resume_command(run_dir))
            loop["next_checkpoint"] += args.checkpoint_interval
        counted = global_step + (args.step_counting == "dopamine")  # dopamine counts the step before acting
        epsilon = linear_schedule(counted, args.learning_starts, args.exploration_steps, args.start_e, args.end_e)
        action = epsilon_greedy(q_network, state, epsilon, rng)
        next_frame, reward, terminated, truncated, info = env.step(action)
        loop["score"], loop["length"] = loop["score"] + float(reward), loop["length"] + 1
        truncated = truncated or loop["length"] == args.max_episode_steps
        life_lost = info["lives"] < loop["lives"]
        # rewards are clipped for learning only; a life loss is terminal for the learner only (spec §6 item 9)
        rb.add(frame, action, float(np.clip(reward, -1.0, 1.0)), terminated or life_lost, loop["first"])
        if truncated and not (terminated or life_lost):
            rb.add_final(next_frame)

        loop["game_ended"] = game_ended = terminated or truncated
        if game_ended:
            logger.log(global_step, **{"charts/episodic_return": loop["score"],
                                       "charts/episodic_length": loop["length"]})
            loop["recent"] = (loop["recent"] + [loop["score"]])[-10:]
            next_frame, info = env.reset()
            state, loop["score"], loop["length"], loop["first"] = stack.reset(next_frame), 0.0, 0, True
        elif life_lost:
            state, loop["first"] = stack.reset(next_frame), True
        else:
            state, loop["first"] = stack.push(next_frame), False
        frame, loop["lives"] = next_frame, info["lives"]

        last_step = global_step + 1 >= args.total_timesteps and (game_ended or not args.finish_last_game)
        if learns_now(global_step, rb, last_step, args):
            loop["loss"], loop["q_mean"] = update(q_network, target_network, optimizer, rb.sample(args.batch_size),
                                                  args)
            if target_network is not q_network and global_step % args.target_network_frequency == 0:
                sync_target(target_network, q_network)

        progress.update(global_step + 1)
        if (global_step + 1) % args.log_interval == 0:
            metrics = {"charts/epsilon": epsilon, "charts/SPS": (global_step + 1) / (time.time() - start_time)}
            if loop["loss"] is not None:
                metrics.update({"losses/td_loss": loop["loss"].item(), "losses/q_values": loop["q_mean"].item()})
            logger.log(global_step + 1, **metrics)
            recent = float(np.mean(loop["recent"])) if loop["recent"] else None
            print(progress.line(global_step + 1, recent), flush=True)
        elif progress.due():
            print(progress.line(global_step + 1, None), flush=True)
        loop["global_step"] = global_step + 1
    env.close()

    loop["frame"] = torch.as_tensor(frame)
    if args.save_model:
        path = logger.dir / "model.pt"
        run_utils.save_checkpoint(path, SCRIPT, {"args": vars(args), "run_name": run_name, "agent": agent_state(),
                                                 "loop": {"global_step": loop["global_step"]}})
        print(f"model saved to {path}", flush=True)
    final = final_evaluation(q_network, args, env_id, device, logger, loop["global_step"], start_time, interrupts)
    if final is None:  # interrupted: the training is complete and checkpointed, the evaluation is redone on resume
        interrupts.exit(loop["global_step"], checkpoint(), run_utils.resume_command(run_dir))
    (run_dir / run_utils.CHECKPOINT).unlink(missing_ok=True)  # the run is done; its replay need not stay on disk
    return final


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line: one of this script's recipes (a tyro subcommand, DEFAULT_RECIPE if none is named), then
    flags that override its values."""
    mine = {name: (doc, Args(recipe=name, **values)) for name, (script, doc, values) in RECIPES.items()
            if script == SCRIPT}
    recipes = tyro.extras.subcommand_type_from_defaults({name: args for name, (_, args) in mine.items()},
                                                       {name: doc for name, (doc, _) in mine.items()},
                                                       prefix_names=False)
    return tyro.cli(recipes, args=argv, default=mine[DEFAULT_RECIPE][1], config=(tyro.conf.CascadeSubcommandArgs,))


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

"""Atari 100k: nddqn_atari.py is n-step double dueling DQN ("Efficient DQN", spec §2); drq_dqn.py adds DrQ to it.

Kostrikov, Yarats & Fergus, "Image Augmentation Is All You Need" (ICLR 2021), §5.3; constants follow spec/ALGORITHMS.md
("spec §x"). The agent acts epsilon-greedily on its last 4 frames; from learning_starts on, every agent step takes one
Adam step on n-step transitions (s, a, G = sum_i gamma^i r_i, gamma^L, s'): the Huber loss of Q(s, a) against
    y = G + gamma^L Q_target(s', argmax_a Q(s', a))    (the double-DQN target, spec §2.3).
DrQ (drq_dqn.py; `diff` it against nddqn_atari.py): y averaged over K random shifts of s', the loss over M random
shifts of s (spec §1.3). A recipe (spec §2.7; `--help` lists them) comes first, flags after it override its values:
    python nddqn_atari.py efficient-dqn --env-id Breakout --seed 1
    python drq_dqn.py drq-eps --env-id Breakout --seed 1
"""
import copy
import functools
import math
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


@dataclass
class Args(atari_envs.EnvArgs, run_utils.AgentRunArgs):
    recipe: tyro.conf.Suppress[str] = "efficient-dqn"
    """the named recipe these values start from (a subcommand, atari_envs.RECIPES; spec §2.7), recorded in args.json"""
    exp_name: str = SCRIPT
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, python and the environment)"""
    log_interval: int = 1000
    """agent steps between loss/SPS log points and progress lines (the only host syncs of the training loop)"""

    # Algorithm (spec §2.3 DrQ.gin / DrQ_eps.gin, §2.7, §6 item 8)
    total_timesteps: int = 100_000
    """agent steps of training; each is 4 frames, so 100k steps = 400k frames (spec §6 item 9)"""
    finish_last_game: bool = False
    """if toggled, train on past total_timesteps until the game then running ends (dopamine's Runner, spec §2.7)"""
    buffer_size: int = 100_000
    """replay capacity in transitions; 100k = every transition of the run; dopamine's "unbounded" proxy is 1M"""
    truncated_windows: Literal["bootstrap", "drop"] = "bootstrap"
    """n-step windows that reach a game cut: `bootstrap` from its last frame, or `drop` them as dopamine (spec §2.7)"""
    replay_sampling: Literal["iid", "dopamine"] = "iid"
    """`iid`: uniform with replacement; `dopamine`: one draw per 1/batch_size stratum, as dopamine (spec §2.7)"""
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
    """`valid` (Nature DQN, 3136 features) or `same` (TF/flax SAME per layer as dopamine, 7744 features, spec §2.7)"""

    # Final evaluation (spec §2.2, §6 item 9)
    eval_episodes: int = 100
    """complete games (all lives) played by the final policy"""
    eval_steps: int = 0
    """if > 0, evaluate for at least this many agent steps of complete games instead (the paper's 125000)"""
    eval_epsilon: float = 0.05
    """evaluation epsilon: 0.05 for DrQ as published, 0.001 for DrQ(eps); 1.0 plays uniformly at random"""


# -- Network (spec §2.3, §2.7) ----------------------------------------------------------------------------------


class QNetwork(nn.Module):
    """Nature CNN (32-8x8/4, 64-4x4/2, 64-3x3/1) -> one shared 512-unit layer -> dueling heads Q = V + A - mean(A);
    xavier-uniform weights and zero biases as dopamine's (spec §2.3); padding="same" pads as TF/flax (spec §2.7)."""

    def __init__(self, n_actions: int, frame_stack: int = 4, padding: str = "valid"):
        super().__init__()
        layers, size = [], 84
        for c_in, c_out, kernel, stride in ((frame_stack, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)):
            if padding == "same":  # the padding that ceil(size / stride) outputs need, the odd pixel after
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                layers.append(nn.ZeroPad2d((total // 2, total - total // 2) * 2))  # left, right, top, bottom
                size += total
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=stride), nn.ReLU()]
            size = (size - kernel) // stride + 1  # valid: 84 -> 20 -> 9 -> 7; same: 84 -> 21 -> 11 -> 11
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(64 * size * size, 512), nn.ReLU())
        self.advantage, self.value = nn.Linear(512, n_actions), nn.Linear(512, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(self.convs(x.float() / 255.0))
        adv = self.advantage(h)
        return self.value(h) + adv - adv.mean(dim=1, keepdim=True)


# -- Replay buffer (spec §2.3, §2.7) ----------------------------------------------------------------------------


class ReplayBuffer:
    """Replay as dopamine's: every frame is stored once, on the training device, and stacks, n-step returns and
    bootstrap discounts are assembled at sample time (100k transitions take 100k * 7056 B = 0.71 GB). Row i holds the
    newest frame of s_i, a_i, the clipped r_i, whether the transition ended a segment (a life loss or game over:
    terminal for the learner only) and whether s_i starts one (`first`: the stack's older positions are zero). A game
    cut by a frame or step limit gets one more row, its last frame with no action: windows that reach the cut
    bootstrap from it. truncated_windows="drop" and sampling="dopamine" apply dopamine's rules instead (spec §2.7): its
    buffer writes 3 zero frames ("slots") before every segment and judges windows in slots (slot_count is its
    add_count); they are exact while no row has been overwritten, as with dopamine's capacity of 1M."""

    def __init__(self, capacity: int, n_step: int, gamma: float, frame_stack: int, device: torch.device,
                 truncated_windows: str = "bootstrap", sampling: str = "iid"):
        self.capacity, self.n_step, self.stack, self.device = capacity, n_step, frame_stack, device
        self.truncated_windows, self.sampling = truncated_windows, sampling
        self.frames = torch.zeros((capacity, 84, 84), dtype=torch.uint8, device=device)
        self.actions = torch.zeros(capacity, dtype=torch.long, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminals, self.first, self.has_action = (torch.zeros(capacity, dtype=torch.bool, device=device)
                                                       for _ in range(3))
        self.count, self.slot_count = 0, 0  # rows ever written (row r lives at r % capacity); dopamine's add_count
        self.final_rows: list[int] = []  # absolute rows without an action (truncations)
        self.skip_rows: list[int] = []  # sorted absolute rows never sampled: final rows, and dropped windows' starts
        self.recent_slots: list[tuple[int, int]] = []  # (row, slot) of the newest n_step + 1 transitions
        self._skip_cache = ([], torch.zeros(0, dtype=torch.long, device=device))  # skip_rows in range, on the device
        self.discounts = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=device)

    def add(self, frame, action: int, reward: float, terminal: bool, first: bool) -> None:
        self.slot_count += 1 + (self.stack - 1) * first
        self.recent_slots = self.recent_slots[-self.n_step:] + [(self.count, self.slot_count - 1)]
        self._write(frame, action, reward, terminal, first, True)

    def add_final(self, frame) -> None:
        dropped = set()
        if self.truncated_windows == "drop":  # dopamine rejects windows whose n slots hold a non-terminal game end
            cut = self.recent_slots[-1][1]
            dropped = {row for row, slot in self.recent_slots if slot > cut - self.n_step}
        self.skip_rows = sorted(set(self.skip_rows) | dropped | {self.count})
        self.final_rows.append(self.count)
        self._write(frame, 0, 0.0, False, False, False)

    def _write(self, frame, action: int, reward: float, terminal: bool, first: bool, has_action: bool) -> None:
        i = self.count % self.capacity
        self.frames[i] = torch.as_tensor(frame, device=self.device)
        self.actions[i], self.rewards[i] = action, reward
        self.terminals[i], self.first[i], self.has_action[i] = terminal, first, has_action
        self.count += 1

    def sample_range(self) -> tuple[int, int]:
        """Rows [lo, hi] that may start a transition: its window is written, its stack's frames not overwritten."""
        return max(0, self.count - self.capacity + self.stack - 1), self.count - 1 - self.n_step

    def stacks(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) absolute rows -> (B, stack, 84, 84) states; a position is zero when a later one starts a segment."""
        window = (rows[:, None] + torch.arange(-self.stack + 1, 1, device=self.device)) % self.capacity
        later_first = self.first[window[:, 1:]].flip(1).cummax(1).values.flip(1)
        keep = torch.cat([~later_first, torch.ones_like(later_first[:, :1])], dim=1)
        return self.frames[window] * keep[:, :, None, None]

    def sample_rows(self, batch_size: int) -> torch.Tensor:
        lo, hi = self.sample_range()
        self.final_rows = [r for r in self.final_rows if r >= lo]
        self.skip_rows = [r for r in self.skip_rows if r >= lo]
        if self.sampling == "dopamine":
            return self._sample_rows_dopamine(batch_size, lo)
        skips = [r for r in self.skip_rows if r <= hi]
        if skips != self._skip_cache[0]:  # rebuilt only when a row enters or leaves the range: no host sync per draw
            self._skip_cache = (skips, torch.tensor(skips, dtype=torch.long, device=self.device))
        n = hi - lo + 1 - len(skips)
        if n <= 0:
            raise RuntimeError("the replay buffer holds no complete n-step transition yet")
        return lo + self._skip(torch.randint(0, n, (batch_size,), device=self.device), self._skip_cache[1] - lo)

    def _skip(self, v: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
        """The v-th offset that is not in `skipped` (sorted offsets): uniform draws that skip rows exactly."""
        if len(skipped):
            v = v + torch.searchsorted(skipped - torch.arange(len(skipped), device=self.device), v, right=True)
        return v

    def _sample_rows_dopamine(self, batch_size: int, lo: int) -> torch.Tensor:
        """dopamine's prioritized buffer at unit priorities: one draw in each of batch_size equal strata of the stored
        transitions; an invalid draw (in the newest n slots, or in skip_rows) is redrawn uniformly until valid."""
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
            rows[invalid] = lo + self._skip(torch.randint(0, n, (int(invalid.sum()),), device=self.device), finals)
            invalid = (rows > newest) | torch.isin(rows, skip)
        return rows

    def sample(self, batch_size: int, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """s, a, the n-step return G (stopping at a segment end), the bootstrap discount gamma^L (0 after a terminal)
        and s' = s_{t+L}."""
        rows = self.sample_rows(batch_size) if rows is None else rows
        steps = rows[:, None] + torch.arange(self.n_step, device=self.device)
        idx = steps % self.capacity
        # a window ends after step j at a terminal, or before a truncation row (which has no action)
        ends = self.terminals[idx] | ~self.has_action[(steps + 1) % self.capacity]
        included = (~torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1).cummax(1).values).float()
        returns = (included * self.discounts[: self.n_step] * self.rewards[idx]).sum(1)
        length = included.sum(1).long()
        discount = self.discounts[length] * (~self.terminals[idx.gather(1, (length - 1)[:, None]).squeeze(1)]).float()
        return {"obs": self.stacks(rows), "actions": self.actions[rows % self.capacity], "returns": returns,
                "discounts": discount, "next_obs": self.stacks(rows + length)}


# -- The update (spec §2.3) -------------------------------------------------------------------------------------


def update(q_network: QNetwork, target_network: QNetwork, optimizer: torch.optim.Optimizer, batch: dict,
           max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the Huber loss of Q(s, a) against the n-step double-DQN target y (module docstring);
    returns the loss and the mean Q(s, a)."""
    next_obs, obs = batch["next_obs"], batch["obs"]
    with torch.no_grad():
        next_q_online = q_network(next_obs)
        # with a target synced every step the target network *is* the online one: skip the duplicate forward pass
        next_q_target = next_q_online if target_network is q_network else target_network(next_obs)
        next_actions = next_q_online.argmax(dim=1, keepdim=True)
        next_q = next_q_target.gather(1, next_actions).squeeze(1)
        target = batch["returns"] + batch["discounts"] * next_q
    q = q_network(obs).gather(1, batch["actions"][:, None]).squeeze(1)
    loss = F.smooth_l1_loss(q, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(q_network.parameters(), max_grad_norm)
    optimizer.step()
    return loss.detach(), q.detach().mean()


def make_target_network(q_network: QNetwork, target_network_frequency: int) -> QNetwork:
    """target_network_frequency 1 (spec §2.3) syncs after every update, so the target that the next update uses
    equals the online network: return the online network itself rather than a copy that always matches it."""
    if target_network_frequency == 1:
        return q_network
    return copy.deepcopy(q_network).requires_grad_(False)


@torch.no_grad()
def sync_target(target_network: QNetwork, q_network: QNetwork) -> None:
    torch._foreach_copy_(list(target_network.parameters()), list(q_network.parameters()))


# -- Acting and evaluation (spec §2.2, §2.3, §6 item 9); the game, its frame stack and the protocol are atari_envs'


def linear_schedule(step: int, learning_starts: int, decay_steps: int, start_e: float, end_e: float) -> float:
    """Dopamine's linearly_decaying_epsilon: start_e until learning starts, then linear to end_e over decay_steps."""
    if step < learning_starts:
        return start_e
    return max(end_e, start_e - (start_e - end_e) * (step - learning_starts) / decay_steps)


def epsilon_greedy(q_network: QNetwork, state: torch.Tensor, epsilon: float, rng: np.random.Generator) -> int:
    """Acting on the raw (unaugmented) stack, in training and evaluation alike; epsilon 1.0 never runs the network."""
    if rng.random() < epsilon:
        return int(rng.integers(q_network.advantage.out_features))
    with torch.no_grad():
        return int(q_network(state[None]).argmax(1).item())


def evaluate(q_network: QNetwork, env_id: str, seed: int, episodes: int, min_steps: int, epsilon: float,
             device: torch.device, video_dir: str | None = None, max_episode_steps: int = 0,
             interrupts: run_utils.Interrupts | None = None, **env_options) -> tuple[list[float], int] | None:
    """Scores and agent steps of complete games under the evaluation protocol of atari_envs.play_games (spec §2.2),
    epsilon-greedy on raw frames; None when `interrupts` asks to stop (the evaluation is then redone on resume)."""
    rng = np.random.default_rng(seed)
    return atari_envs.play_games(env_id, seed, lambda state: epsilon_greedy(q_network, state, epsilon, rng), episodes,
                                 min_steps, device, video_dir, max_episode_steps, interrupts, **env_options)


# -- The training loop (spec §2.3) ------------------------------------------------------------------------------


def make_update(args: Args):
    """`update` with this run's hyperparameters bound: main calls it on the networks, the optimizer and a batch."""
    return functools.partial(update, max_grad_norm=args.max_grad_norm)


def learns_now(step: int, rb: ReplayBuffer, last_step: bool, args: Args) -> bool:
    """Whether an update follows the transition of agent step `step`. Counting agent steps: from step learning_starts
    on, every train_frequency steps. Counting as dopamine's agent does (spec §2.7): it trains before each action, so
    never after the run's last transition; its step counter runs one ahead of ours; and it compares
    min_replay_history with its buffer's add_count, which counts 3 zero slots before every segment."""
    if args.step_counting == "agent":
        return step >= args.learning_starts and step % args.train_frequency == 0
    return not last_step and rb.slot_count > args.learning_starts and (step + 1) % args.train_frequency == 0


def main(args: Args, argv: list[str] = ()) -> dict:
    """Train, then evaluate the final policy (with --eval-checkpoint, only evaluate); returns final.json's dict."""
    if args.eval_checkpoint:
        return evaluate_checkpoint(args, argv)
    ckpt = run_utils.resume(args, argv, SCRIPT, vars(Args()))
    env_id, device = validate(args, argv)
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    run = run_utils.Run(args, SCRIPT, env_id, device, ckpt, f"recipe {args.recipe}: {args.total_timesteps} agent "
                        f"steps, learning from step {args.learning_starts}, then the final evaluation",
                        atari_envs.LOOP_START, time.time())
    loop = run.loop
    env = atari_envs.make_env(env_id, args.seed, **args.env_options())
    q_network = QNetwork(env.action_space.n, padding=args.conv_padding).to(device)
    target_network = make_target_network(q_network, args.target_network_frequency)
    learn = make_update(args)  # `update` with this run's hyperparameters bound
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    rb = ReplayBuffer(args.buffer_size, args.n_step, args.gamma, 4, device, args.truncated_windows,
                      args.replay_sampling)
    stack, rng = atari_envs.FrameStack(4, device), np.random.default_rng(args.seed)
    if ckpt:  # all the run's state: resuming is bitwise the run that was never stopped (tests/test_resume.py)
        atari_envs.restore(ckpt, q_network, target_network, optimizer, rb, env, stack, rng)
    else:
        frame, info = env.reset(seed=args.seed)
        stack.reset(frame)
        loop["frame"], loop["lives"] = torch.as_tensor(frame), info["lives"]

    def checkpoint_state() -> dict:  # the loop's frame is the one the next step acts on
        loop["frame"] = torch.as_tensor(frame)
        return atari_envs.training_state(q_network, target_network, optimizer, rb, env, stack, rng)

    state, frame = stack.frames, loop["frame"].numpy()
    # with --finish-last-game, as dopamine's Runner: the game running at total_timesteps is played (and learnt) out
    while loop["global_step"] < args.total_timesteps or (args.finish_last_game and not loop["game_ended"]):
        global_step = loop["global_step"]
        run.checkpoint_when_due(global_step, checkpoint_state)
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
            atari_envs.log_game(run, global_step)
            next_frame, info = env.reset()
            state, loop["score"], loop["length"], loop["first"] = stack.reset(next_frame), 0.0, 0, True
        elif life_lost:
            state, loop["first"] = stack.reset(next_frame), True
        else:
            state, loop["first"] = stack.push(next_frame), False
        frame, loop["lives"] = next_frame, info["lives"]

        last_step = global_step + 1 >= args.total_timesteps and (game_ended or not args.finish_last_game)
        if learns_now(global_step, rb, last_step, args):
            loop["loss"], loop["q_mean"] = learn(q_network, target_network, optimizer, rb.sample(args.batch_size))
            if target_network is not q_network and global_step % args.target_network_frequency == 0:
                sync_target(target_network, q_network)

        loop["global_step"] = global_step + 1
        atari_envs.log_step(run, args.log_interval, epsilon)
    env.close()

    run.save_model(agent=atari_envs.agent_state(q_network, target_network, optimizer),
                   loop={"global_step": loop["global_step"]})
    final = final_evaluation(q_network, args, env_id, device, run.logger, loop["global_step"], run.t_start,
                             run.interrupts)
    if final is None:  # interrupted: checkpoint the complete training and exit; the evaluation is redone on resume
        run.exit_interrupted(loop["global_step"], checkpoint_state)
    (run.dir / run_utils.CHECKPOINT).unlink(missing_ok=True)  # the run is done; its replay need not stay on disk
    return final


# -- Run bookkeeping (shared: atari_envs): validation, the final evaluation, --eval-checkpoint, the command line


def validate(args: Args, argv: list[str]) -> tuple[str, torch.device]:
    """One-line errors for bad input, before anything is written; returns the game's gymnasium id and the device."""
    run_utils.positive(total_timesteps=args.total_timesteps, batch_size=args.batch_size, buffer_size=args.buffer_size,
                       n_step=args.n_step, checkpoint_interval=args.checkpoint_interval,
                       log_interval=args.log_interval, train_frequency=args.train_frequency)
    return atari_envs.check_flags(args, argv)


def final_evaluation(q_network, args, env_id, device, logger, trained_steps, start_time, interrupts=None):
    """The final evaluation (spec §2.2), written to final.json; None when interrupted."""
    play = functools.partial(evaluate, q_network, env_id, args.seed + 10_000, args.eval_episodes, args.eval_steps,
                             args.eval_epsilon, device, max_episode_steps=args.max_episode_steps,
                             interrupts=interrupts, **args.env_options())  # play(video_dir)
    return atari_envs.final_evaluation(args, env_id, logger, play, trained_steps=trained_steps,
                                       start_time=start_time)


def evaluate_checkpoint(args: Args, argv: list[str]) -> dict:
    """--eval-checkpoint: evaluate the network of a model.pt or checkpoint.pt of this script; nothing is trained."""
    return atari_envs.evaluate_saved(args, argv, SCRIPT, validate, final_evaluation,
                                     lambda n_actions, saved: QNetwork(n_actions, padding=saved["conv_padding"]))


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line: one of this script's recipes (atari_envs.RECIPES, tyro subcommands; Args' own if none is
    named), then flags that override its values."""
    return atari_envs.parse_recipe_args(Args, SCRIPT, argv)


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

"""Atari games for the Atari scripts (nddqn_atari, drq_dqn) and the human-normalised score (spec §2.3, §2.7, §3):
gymnasium's ALE env without sticky actions, frame skip 4 with a max-pool, grayscale 84x84, no-ops at reset (as
gymnasium's AtariPreprocessing or, behind flags, as dopamine's Atari 100k runner), and a recorder that carries the game
in progress through a checkpoint. Then the run bookkeeping both scripts share: the recipes (RECIPES, tyro
subcommands), the flags' one-line errors, final.json of the final evaluation, and the Q-network's checkpoint state.
Not part of any algorithm: both scripts play the same games and keep the same books, so it is written once."""
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import tyro

import run_utils

HERE = Path(__file__).resolve().parent


@dataclass
class EnvArgs:
    """The game's flags, the same in both Atari scripts, whose `Args` inherit them (spec §2.3, §2.7, §6 item 9)."""
    env_id: str = "Breakout"
    """Atari game: `Breakout` or `BreakoutNoFrameskip-v4` (no sticky actions, minimal action set)"""
    noop_max: int = 30
    """up to this many no-op actions at the start of every game (spec §2.3 runner)"""
    noop_mode: Literal["gymnasium", "dopamine"] = "gymnasium"
    """`gymnasium`: 1..noop_max no-ops, then their frame; `dopamine`: 0..noop_max-1, the frame before (spec §2.7)"""
    life_loss_ends_frame_skip: bool = False
    """if toggled, a life loss ends the agent step's 4-frame skip at once (dopamine's AtariPreprocessing, spec §2.7)"""
    max_episode_frames: int = 108_000
    """a game is cut (truncated) after this many ALE frames, no-op frames included (27k agent steps); 0 = no cap"""
    max_episode_steps: int = 0
    """if > 0, a game is cut after this many agent steps (dopamine's max_steps_per_episode 27000, spec §2.7)"""

    def env_options(self) -> dict:
        """make_env's settings from these flags, for training and evaluation alike."""
        return {"noop_max": self.noop_max, "max_episode_frames": self.max_episode_frames, "noop_mode": self.noop_mode,
                "life_loss_ends_frame_skip": self.life_loss_ends_frame_skip}


def atari_games() -> list[str]:
    import ale_py

    gym.register_envs(ale_py)
    suffix = "NoFrameskip-v4"
    return sorted(k[: -len(suffix)] for k in gym.registry if k.endswith(suffix) and "-ram" not in k)


def resolve_env_id(env_id: str) -> str:
    """`Breakout` or `BreakoutNoFrameskip-v4` -> `BreakoutNoFrameskip-v4`; anything else is a one-line error."""
    game = env_id.removesuffix("NoFrameskip-v4")
    games = atari_games()
    if game not in games:
        run_utils.unknown_choice("Atari game", env_id, games)
    return f"{game}NoFrameskip-v4"


def make_env(env_id: str, seed: int, noop_max: int = 30, max_episode_frames: int = 108_000,
             video_dir: str | None = None, noop_mode: str = "gymnasium", life_loss_ends_frame_skip: bool = False):
    """<Game>NoFrameskip-v4, no sticky actions, minimal action set, frame skip 4 with a max-pool over the last two
    frames, grayscale 84x84 (cv2 INTER_AREA), up to `noop_max` no-ops at reset. The frame stack is kept by the agent
    (the scripts' FrameStack), and the game is not reset on a life loss (spec §2.3). Dopamine's no-ops and frame skip
    (spec §2.7) come from DopaminePreprocessing, gymnasium's AtariPreprocessing does the rest."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(env_id, repeat_action_probability=0.0, full_action_space=False,
                   max_num_frames_per_episode=max_episode_frames,
                   render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: episode == 0,
                                       disable_logger=True)
    if noop_mode == "dopamine" or life_loss_ends_frame_skip:
        env = DopaminePreprocessing(env, noop_max, noop_mode, life_loss_ends_frame_skip)
    else:
        env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84,
                                              terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    env = GameRecorder(env)
    env.action_space.seed(seed)
    return env


class GameRecorder(gym.Wrapper):
    """Carries the game in progress through a checkpoint: how the game was reset (the run's seed, and the env's
    random state, which draws the no-ops) and the actions since; `restore` replays them in a fresh env. The emulator
    is deterministic and sticky actions are off, so the game is rebuilt bit for bit."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.seed, self.seeded_reset, self.random_at_reset, self.actions = None, False, None, []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.seed = seed if seed is not None else self.seed
        self.seeded_reset = seed is not None
        self.random_at_reset = self.env.unwrapped.np_random.bit_generator.state
        self.actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action: int):
        self.actions.append(int(action))
        return self.env.step(action)

    def snapshot(self) -> dict:
        return run_utils.plain({"seed": self.seed, "seeded_reset": self.seeded_reset,
                                "random_at_reset": self.random_at_reset,
                                "actions": torch.tensor(self.actions, dtype=torch.long)})

    def restore(self, snap: dict) -> None:
        self.reset(seed=snap["seed"])  # loads the ROM and seeds the ALE as the run's first reset did
        if not snap["seeded_reset"]:
            self.env.unwrapped.np_random.bit_generator.state = run_utils.numpy_state(snap["random_at_reset"])
            self.reset()
        for action in snap["actions"].tolist():
            self.step(action)


class DopaminePreprocessing(gym.Wrapper):
    """dopamine's atari_lib.AtariPreprocessing with its Atari 100k runner's no-ops (8de9df0, spec §2.7), on the
    gymnasium API. Same frames as gymnasium's AtariPreprocessing except where a flag asks for dopamine's behaviour:
    - noop_mode "dopamine": 0..noop_max-1 no-ops sent to the ALE directly, so the game's first observation is the
      frame from before them (eval_run_experiment.MaxEpisodeEvalRunner._run_no_ops, in training and evaluation);
    - life_loss_ends_frame_skip: a life loss ends the 4-frame skip at once, and the observation pools whatever the two
      screen buffers hold then (AtariPreprocessing.step with terminal_on_life_loss = True)."""

    def __init__(self, env: gym.Env, noop_max: int, noop_mode: str, life_loss_ends_frame_skip: bool):
        super().__init__(env)
        self.noop_max, self.noop_mode, self.stop_on_life_loss = noop_max, noop_mode, life_loss_ends_frame_skip
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        self.ale = env.unwrapped.ale
        self.screens = [np.zeros(self.ale.getScreenDims(), dtype=np.uint8) for _ in range(2)]
        self.lives = 0

    def observe(self) -> np.ndarray:
        import cv2

        # in place, as dopamine pools: the pooled frame stays in screens[0], which a step cut short pools again
        np.maximum(self.screens[0], self.screens[1], out=self.screens[0])
        return cv2.resize(self.screens[0], (84, 84), interpolation=cv2.INTER_AREA)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        _, info = self.env.reset(seed=seed, options=options)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops if self.noop_mode == "gymnasium" else 0):
            _, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                _, info = self.env.reset(seed=seed, options=options)
        self.ale.getScreenGrayscale(self.screens[0])
        self.screens[1].fill(0)
        if self.noop_mode == "dopamine":
            for _ in range(noops - 1):  # dopamine's jax.random.randint(0, max_noops) excludes its upper bound
                self.ale.act(0)
            if self.ale.game_over():
                _, info = self.env.reset(seed=seed, options=options)
                self.ale.getScreenGrayscale(self.screens[0])
        self.lives = self.ale.lives()
        return self.observe(), info

    def step(self, action: int):
        total_reward = 0.0
        for t in range(4):
            _, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            life_lost = self.stop_on_life_loss and self.ale.lives() < self.lives
            self.lives = self.ale.lives()
            if terminated or truncated or life_lost:
                break
            if t >= 2:
                self.ale.getScreenGrayscale(self.screens[t - 2])
        return self.observe(), total_reward, terminated, truncated, info


# ---------------------------------------------------------------------------------------------------------------
# The agent's frame stack and the evaluation protocol (spec §2.2, §2.3, §6 item 9), the same for both Atari scripts


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


def play_games(env_id: str, seed: int, policy, episodes: int, min_steps: int, device: torch.device,
               video_dir: str | None = None, max_episode_steps: int = 0, interrupts: run_utils.Interrupts | None = None,
               **env_options) -> tuple[list[float], int] | None:
    """Scores (undiscounted, unclipped) and agent steps of `episodes` complete games (all lives, until game over or
    the frame or step cap), or of complete games until min_steps agent steps if min_steps > 0 (dopamine's protocol),
    of `policy(state) -> action` on the raw frame stack. A life loss restarts the frame stack but not the game. None
    when `interrupts` asks to stop."""
    env = make_env(env_id, seed, video_dir=video_dir, **env_options)
    stack, returns, steps, last_line = FrameStack(4, device), [], 0, time.time()
    frame, info = env.reset(seed=seed)
    state, lives, score, length = stack.reset(frame), info["lives"], 0.0, 0
    while (steps < min_steps) if min_steps > 0 else (len(returns) < episodes):
        if interrupts is not None and interrupts.requested:
            env.close()
            return None
        if time.time() - last_line >= 20:  # a line every ~20 s
            print(f"  evaluation: {len(returns)} games, {steps} agent steps", flush=True)
            last_line = time.time()
        frame, reward, terminated, truncated, info = env.step(policy(state))
        score, length, steps = score + float(reward), length + 1, steps + 1
        if terminated or truncated or length == max_episode_steps:
            returns.append(score)
            frame, info = env.reset()
            state, lives, score, length = stack.reset(frame), info["lives"], 0.0, 0
        elif info["lives"] < lives:
            state, lives = stack.reset(frame), info["lives"]
        else:
            state = stack.push(frame)
    env.close()
    return returns, steps


def human_random_scores() -> dict[str, tuple[float, float]]:
    """Standard human/random reference scores (spec §3), shipped in reference/atari_100k_scores.csv."""
    with open(HERE / "reference" / "atari_100k_scores.csv") as f:
        return {row["game"]: (float(row["random"]), float(row["human"])) for row in csv.DictReader(f)}


def human_normalized_score(game: str, score: float) -> float | None:
    table = human_random_scores()
    if game not in table:
        return None
    rand, human = table[game]
    return (score - rand) / (human - rand)


# ---------------------------------------------------------------------------------------------------------------
# The run bookkeeping of both Atari scripts: recipes, one-line errors, the final evaluation's final.json, checkpoints

# dopamine's Atari 100k agent as it produced the published DrQ(eps) scores (labs/atari_100k at 8de9df0); spec §2.7
# cites the file of every value, and each value is a flag of its own
DOPAMINE_EPS = dict(end_e=0.01, eval_epsilon=0.001, conv_padding="same", noop_mode="dopamine",
                    life_loss_ends_frame_skip=True, max_episode_frames=0, max_episode_steps=27_000,
                    finish_last_game=True, buffer_size=1_000_000, truncated_windows="drop", replay_sampling="dopamine",
                    step_counting="dopamine")
# The Atari recipes (tyro subcommands), one table shared by both scripts: name -> (script, description, values).
RECIPES = {
    "efficient-dqn": ("nddqn_atari", "the DrQ paper's Efficient DQN baseline, DrQ without augmentation (spec §2.1)",
                      {}),
    "efficient-dqn-eps": ("nddqn_atari", "dopamine's configs/DrQ_eps.gin with data_augmentation = False (spec §2.7)",
                          DOPAMINE_EPS),
    "drq": ("drq_dqn", "DrQ with the paper's Atari settings (spec §2.1-2.4)", {}),
    "drq-eps": ("drq_dqn", "DrQ(eps): dopamine's configs/DrQ_eps.gin and agent, value for value (spec §2.7)",
                {**DOPAMINE_EPS, "intensity_scale": 0.05, "shift_range": "asymmetric", "shift_per": "batch"}),
}


def parse_recipe_args(args_type, script: str, argv: list[str] | None = None):
    """The command line of `script`: one of its RECIPES (a tyro subcommand; args_type's own if none is named), then
    flags that override its values."""
    mine = {name: (doc, args_type(recipe=name, **values)) for name, (owner, doc, values) in RECIPES.items()
            if owner == script}
    recipes = tyro.extras.subcommand_type_from_defaults({name: args for name, (_, args) in mine.items()},
                                                       {name: doc for name, (doc, _) in mine.items()},
                                                       prefix_names=False)
    return tyro.cli(recipes, args=argv, default=mine[args_type.recipe][1], config=(tyro.conf.CascadeSubcommandArgs,))


def check_flags(args, argv: list[str]) -> tuple[str, torch.device]:
    """The one-line errors of an Atari script's flags after its positive counts: the game, the learning schedule
    against the buffer, the epsilons, the evaluation and the game caps, then the bookkeeping flags. Returns the game's
    gymnasium id and the device."""
    env_id = resolve_env_id(args.env_id)
    run_utils.require(args.n_step < args.learning_starts < args.total_timesteps,
                      f"--learning-starts {args.learning_starts} must exceed --n-step {args.n_step} (a complete n-step "
                      f"transition must exist when updates begin) and be below --total-timesteps "
                      f"{args.total_timesteps}")
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
    return env_id, run_utils.check_run_flags(args, argv)


def final_evaluation(args, env_id: str, logger: run_utils.RunLogger, play, trained_steps: int, start_time: float,
                     **fields) -> dict | None:
    """The final evaluation (spec §2.2): `play(video_dir or None)` gives the scores and agent steps of the games, or
    None when interrupted (then this returns None); final.json holds them with the script's `fields`."""
    what = f"{args.eval_steps} agent steps of complete games" if args.eval_steps > 0 else f"{args.eval_episodes} games"
    print(f"final evaluation: {what} at epsilon {args.eval_epsilon} ...", flush=True)
    t0 = time.time()
    result = play(str(logger.dir / "videos") if args.capture_video else None)
    if result is None:
        return None
    returns, steps = result
    mean_return = float(np.mean(returns)) if returns else float("nan")
    hns = human_normalized_score(env_id.removesuffix("NoFrameskip-v4"), mean_return)
    final = {"env_id": env_id, "algo": args.exp_name, "recipe": args.recipe, "seed": args.seed,
             "total_timesteps": trained_steps, "eval_episodes": len(returns), "eval_steps": steps,
             "eval_epsilon": args.eval_epsilon, "end_e": args.end_e, **fields,
             "mean_return": mean_return, "std_return": float(np.std(returns)) if returns else float("nan"),
             "returns": returns, "hns": hns, "wall_time_s": time.time() - start_time,
             "run_name": logger.header["run_name"]}
    if args.eval_checkpoint:
        final["evaluated_checkpoint"] = str(args.eval_checkpoint)
    path = logger.finish(final)
    print(f"final evaluation: {len(returns)} games in {time.time() - t0:.0f} s, mean return {mean_return:.1f}, "
          f"HNS {hns} -> {path}", flush=True)
    return final


def trained_game_actions(args, ckpt: dict, env_id: str) -> int:
    """--eval-checkpoint: the action count of the checkpoint's game, a one-line error unless it is `env_id`."""
    trained_on = resolve_env_id(ckpt["args"]["env_id"])
    run_utils.require(trained_on == env_id, f"checkpoint was trained on {trained_on}, not {env_id}")
    env = make_env(env_id, args.seed, **args.env_options())
    n_actions = env.action_space.n
    env.close()
    return n_actions


def evaluate_saved(args, argv: list[str], script: str, validate, final_evaluation, build) -> dict:
    """--eval-checkpoint of an Atari script: the network of its model.pt or checkpoint.pt, made by
    `build(action count, saved flags)`, through the script's `final_evaluation`; nothing is trained."""
    start_time = time.time()
    ckpt = run_utils.load_checkpoint(args.eval_checkpoint, script)
    env_id, device = validate(args, argv)
    n_actions = trained_game_actions(args, ckpt, env_id)  # a one-line error for another game
    q_network = build(n_actions, ckpt["args"]).to(device)
    q_network.load_state_dict(ckpt["agent"]["q_network"])
    run_name, run_dir = run_utils.run_location(args, env_id)
    logger = run_utils.RunLogger(args, run_dir, run_utils.run_record(args, script, run_name, device))
    return final_evaluation(q_network, args, env_id, device, logger, ckpt["loop"]["global_step"], start_time)


# ---------------------------------------------------------------------------------------------------------------
# The training loop's bookkeeping, the same in both Atari scripts (run_utils.Run holds `loop`)

# the loop's counters at the start of a run (each checkpoint saves them); main sets the first game's frame and lives
LOOP_START = {"global_step": 0, "frame": None, "lives": None, "first": True, "score": 0.0, "length": 0, "recent": [],
              "loss": None, "q_mean": None, "game_ended": False}
REPLAY_ARRAYS = ("frames", "actions", "rewards", "terminals", "first", "has_action")


def log_game(run: run_utils.Run, step: int) -> None:
    """A game's end: its score and length in metrics.jsonl; the last 10 scores feed the progress lines."""
    loop = run.loop
    run.logger.log(step, **{"charts/episodic_return": loop["score"], "charts/episodic_length": loop["length"]})
    loop["recent"] = (loop["recent"] + [loop["score"]])[-10:]


def log_step(run: run_utils.Run, log_interval: int, epsilon: float) -> None:
    """After each agent step: every `log_interval` steps the loss, Q, epsilon and SPS in metrics.jsonl (the only
    host syncs of the loop) and a progress line; otherwise a progress line when one is due."""
    loop, progress = run.loop, run.progress
    step = loop["global_step"]
    progress.update(step)
    if step % log_interval == 0:
        losses = {} if loop["loss"] is None else {"losses/td_loss": loop["loss"].item(),
                                                  "losses/q_values": loop["q_mean"].item()}
        run.logger.log(step, **{"charts/epsilon": epsilon, "charts/SPS": step / (time.time() - run.t_start)},
                       **losses)
        print(progress.line(step, float(np.mean(loop["recent"])) if loop["recent"] else None), flush=True)
    elif progress.due():
        print(progress.line(step, None), flush=True)


def replay_state(rb) -> dict:
    """The replay's written rows (uint8 frames as stored) and its bookkeeping lists."""
    return run_utils.rows_state(rb, dict.fromkeys(REPLAY_ARRAYS, min(rb.count, rb.capacity)),
                                ["count", "final_rows", "skip_rows", "slot_count", "recent_slots"])


def training_state(q_network, target_network, optimizer: torch.optim.Optimizer, rb, env, stack: FrameStack,
                   rng: np.random.Generator) -> dict:
    """An Atari run's part of checkpoint.pt (run_utils adds the flags, RNGs, `loop` and the logs' position): the
    agent, the replay, the game mid-episode, the agent's frame stack and its acting RNG."""
    return {"agent": agent_state(q_network, target_network, optimizer), "replay": replay_state(rb),
            "env": env.snapshot(), "stack": stack.frames, "acting_rng": rng.bit_generator.state}


def restore(ckpt: dict, q_network, target_network, optimizer: torch.optim.Optimizer, rb, env, stack: FrameStack,
            rng: np.random.Generator) -> None:
    """The inverse of training_state, then the RNGs: resuming is bitwise the run that was never stopped
    (tests/test_resume.py)."""
    load_agent_state(ckpt["agent"], q_network, target_network, optimizer)
    run_utils.load_rows_state(rb, ckpt["replay"], REPLAY_ARRAYS)
    rb.recent_slots = [tuple(r) for r in rb.recent_slots]  # (row, slot) pairs
    env.restore(ckpt["env"])
    stack.frames.copy_(ckpt["stack"])
    rng.bit_generator.state = run_utils.numpy_state(ckpt["acting_rng"])
    run_utils.set_rng_state(ckpt["rng"])


def agent_state(q_network, target_network, optimizer: torch.optim.Optimizer) -> dict:
    """A DQN agent's part of a checkpoint; no target network's when the target is the online network itself."""
    return {"q_network": q_network.state_dict(), "optimizer": optimizer.state_dict(),
            "target_network": None if target_network is q_network else target_network.state_dict()}


def load_agent_state(state: dict, q_network, target_network, optimizer: torch.optim.Optimizer) -> None:
    q_network.load_state_dict(state["q_network"])
    optimizer.load_state_dict(state["optimizer"])
    if target_network is not q_network:
        target_network.load_state_dict(state["target_network"])

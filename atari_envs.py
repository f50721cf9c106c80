"""Atari games for the Atari scripts (nddqn_atari, drq_dqn) and the human-normalised score (spec §2.3, §2.7, §3):
gymnasium's ALE env without sticky actions, frame skip 4 with a max-pool, grayscale 84x84, no-ops at reset (as
gymnasium's AtariPreprocessing or, behind flags, as dopamine's Atari 100k runner), and a recorder that carries the game
in progress through a checkpoint. Not part of any algorithm: both scripts play the same games, so it is written once."""
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch

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

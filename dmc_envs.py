"""DeepMind Control tasks as gymnasium envs for the DMC scripts (sac_state, sac_pixels, drq_sac, sac_ae,
pretrain_autoencoder), as the authors use dmc2gym (spec §1.4, §6 items 3 and 5): dm_control through shimmy, actions in
[-1, 1], action repeat with summed rewards, time-limit truncation (never a termination), 84x84 RGB frames stacked 3
deep; and the run bookkeeping that every DMC training loop repeats (counters, evaluation schedule, checkpoint state).
Not part of any algorithm: every DMC script sees the same environment and keeps the same books, so they are written
once."""
import os

# dm_control picks its GL backend at import time; EGL renders headless (also on CPU through Mesa).
os.environ.setdefault("MUJOCO_GL", "egl")

import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import run_utils  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # glfw complains about a missing X display although EGL does the rendering
    import shimmy
    from dm_control import suite

gym.register_envs(shimmy)

DMC_TASKS = [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]
# PlaNet-benchmark action repeats (spec §1.4, §6 item 3); any other task gets DEFAULT_ACTION_REPEAT, the
# Dreamer-benchmark value used there for all 15 tasks.
ACTION_REPEAT = {"cartpole-swingup": 8, "reacher-easy": 4, "cheetah-run": 4, "ball_in_cup-catch": 4,
                 "finger-spin": 2, "walker-walk": 2}
DEFAULT_ACTION_REPEAT = 2


@dataclass
class EnvArgs:
    """The task's flags and the evaluation protocol, the same in every DMC training script, whose `Args` inherit them
    (spec §1.4, §6 items 3 and 5), as the Atari scripts' inherit atari_envs.EnvArgs."""
    env_id: str = "cartpole-swingup"
    """dm_control task: `cartpole-swingup` or `dm_control/cartpole-swingup-v0`"""
    action_repeat: int | None = None
    """env steps per agent action, rewards summed; default: the task's PlaNet-benchmark value, else 2 (spec §1.4)"""
    episode_length: int = 1000
    """env steps before the time limit truncates an episode (bootstrapped through, spec §6 item 5)"""
    eval_frequency: int = 10_000
    """env steps between evaluations (the paper's 10k); one also runs at step 0 and at the end (spec §1.4)"""
    eval_episodes: int = 10
    """episodes per evaluation, deterministic action tanh(mu) (spec §1.4)"""


def resolve_env_id(env_id: str) -> tuple[str, str]:
    """`cartpole-swingup`, `cartpole_swingup` or `dm_control/cartpole-swingup-v0` -> ("cartpole", "swingup")."""
    name = env_id.removeprefix("dm_control/").removesuffix("-v0")
    for domain, task in suite.ALL_TASKS:
        if name in (f"{domain}-{task}", f"{domain}_{task}"):
            return domain, task
    run_utils.unknown_choice("dm_control task", env_id, DMC_TASKS)


def default_action_repeat(env_id: str) -> int:
    return ACTION_REPEAT.get("-".join(resolve_env_id(env_id)), DEFAULT_ACTION_REPEAT)


class DMCEnv(gym.Env):
    """One dm_control task as a gymnasium env: actions in [-1, 1] (rescaled to the task's bounds), each repeated
    `action_repeat` env steps with the rewards summed; the episode is truncated (never terminated) at
    `episode_length` env steps, the DMC time limit; info["env_steps"] counts the env steps of the last call.
    Pixels: 84x84 RGB from camera 0 (2 for quadruped), the last `frame_stack` frames stacked along the channels,
    uint8 (9, 84, 84); reset fills the stack with copies of the first frame. State: the flattened observation.
    `snapshot`/`restore` carry the env through a checkpoint: the task's random state before the episode's reset and
    the actions since, replayed on restore (MuJoCo is deterministic, so the state is rebuilt bit for bit)."""

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
        # the agent acts in [-1, 1] like dmc2gym's; quadruped's bounds are wider and are rescaled to
        self.low, self.high = inner.low.astype(np.float64), inner.high.astype(np.float64)
        self.rescale = not (np.all(self.low == -1.0) and np.all(self.high == 1.0))
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
        self.random_at_reset, self.actions = None, []

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
        if seed is not None:
            self.env.unwrapped.np_random = np.random.RandomState(seed)
        self.random_at_reset = self.env.unwrapped.np_random.get_state(legacy=False)
        state, info = self.env.reset()
        self.t, self.actions = 0, []
        if self.pixels:
            self.frames = [self.render_frame()] * self.frame_stack
            return np.concatenate(self.frames, axis=0), info
        return self.observe(state), info

    def step(self, action: np.ndarray):
        self.actions.append(np.array(action))
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

    def snapshot(self) -> dict:
        return run_utils.plain({"first_reset": self.first_reset, "random_at_reset": self.random_at_reset,
                                "actions": list(self.actions),
                                "action_space": self.action_space.np_random.bit_generator.state})

    def restore(self, snap: dict) -> np.ndarray | None:
        """Rebuild the env of `snapshot`; returns the observation of the episode in progress."""
        self.action_space.np_random.bit_generator.state = run_utils.numpy_state(snap["action_space"])
        if snap["first_reset"]:
            return None
        self.env.unwrapped.np_random.set_state(run_utils.numpy_state(snap["random_at_reset"]))
        self.first_reset = False
        obs, _ = self.reset()
        for action in snap["actions"]:
            obs = self.step(action.numpy())[0]
        return obs

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


def run_episodes(env: DMCEnv, policy, episodes: int, video_path=None) -> list[float]:
    """The returns of `episodes` whole episodes of `policy(obs) -> action`; the first is written to `video_path`
    (mp4, 256x256) when given. A line every ~20 s says how far it is (ten pixel episodes can take half a minute on
    a loaded CPU)."""
    returns, last_line = [], time.time()
    for episode in range(episodes):
        if time.time() - last_line > 20:
            print(f"  evaluation: {episode}/{episodes} episodes", flush=True)
            last_line = time.time()
        obs, _ = env.reset()
        frames = [env.render_frame(256)] if video_path and episode == 0 else None
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            done, total = terminated or truncated, total + reward
            if frames is not None:
                frames.append(env.render_frame(256))
        returns.append(total)
        if frames is not None:
            import imageio

            video_path.parent.mkdir(parents=True, exist_ok=True)
            imageio.mimsave(video_path, [f.transpose(1, 2, 0) for f in frames], fps=max(int(round(env.fps)), 1))
    return returns


def start_run(args, script: str, env_name: str, action_repeat: int, learning_starts: int, device, ckpt: dict | None,
              t_start: float, loop_start: dict | None = None, **resolved) -> run_utils.Run:
    """A DMC training run's run_utils.Run (loop counters from `loop_start`, by default LOOP_START; `resolved` settings
    for args.json), announced with what it will do; notes a task outside the PlaNet action-repeat table."""
    if args.action_repeat is None and env_name not in ACTION_REPEAT:
        print(f"note: {env_name} is not in the PlaNet-benchmark action-repeat table; using {DEFAULT_ACTION_REPEAT}, "
              "the Dreamer-benchmark value (spec §1.4)", flush=True)
    plan = (f"{args.total_timesteps} env steps (action repeat {action_repeat}), learning from step {learning_starts}, "
            f"{args.eval_episodes}-episode evaluations every {args.eval_frequency} steps")
    return run_utils.Run(args, script, env_name, device, ckpt, plan, loop_start or LOOP_START, t_start,
                         action_repeat=action_repeat, learning_starts=learning_starts, **resolved)


def resolve_schedule(args) -> tuple[str, int, int]:
    """A DMC training run's task name, action repeat and learning start from its flags (None: the defaults of
    spec §1.4), with one-line errors for values that cannot run."""
    env_name = "-".join(resolve_env_id(args.env_id))
    if args.action_repeat is not None:
        run_utils.positive(action_repeat=args.action_repeat)
    action_repeat = args.action_repeat or default_action_repeat(env_name)
    learning_starts = 1000 * action_repeat if args.learning_starts is None else args.learning_starts
    run_utils.require(0 <= learning_starts < args.total_timesteps, f"--learning-starts {learning_starts} must be "
                      f"in [0, --total-timesteps {args.total_timesteps})")
    held = min(math.ceil(learning_starts / action_repeat), args.buffer_size)  # transitions at the first update
    run_utils.require(args.batch_size <= held, f"--batch-size {args.batch_size} is larger than the {held} transitions "
                      f"the buffer holds when updates start (--learning-starts {learning_starts} env steps at action "
                      f"repeat {action_repeat}, --buffer-size {args.buffer_size})")
    return env_name, action_repeat, learning_starts


def evaluate_saved(args, argv: list[str], script: str, build, evaluate, **fields):
    """--eval-checkpoint of a DMC script: the agent of its model.pt or checkpoint.pt on the run's own task and action
    repeat. `build(saved flags, checkpoint, task, action repeat, device)` makes the evaluation env and the agent at
    the run's sizes, into which the checkpoint's agent parts load; final.json records the returns of
    `evaluate(actor, env, episodes, device, video path)`. Nothing is trained. Returns (final, agent, None) as `main`."""
    t_start = time.time()
    ckpt, device = run_utils.checkpoint_to_evaluate(args, argv, script)
    saved = ckpt["args"]
    action_repeat = saved["action_repeat"] or default_action_repeat(saved["env_id"])
    env_name = "-".join(resolve_env_id(saved["env_id"]))
    env, agent = build(saved, ckpt, env_name, action_repeat, device)
    run_utils.load_parts_state(agent, ckpt["agent"])
    final = run_utils.checkpoint_evaluation(args, script, env_name, device, t_start,
                                            lambda video: evaluate(agent.actor, env, args.eval_episodes, device, video),
                                            **{"k": saved.get("k", 1), "m": saved.get("m", 1), **fields},
                                            action_repeat=action_repeat, total_timesteps=0)
    return final, agent, None


# ---------------------------------------------------------------------------------------------------------------
# The training loop's bookkeeping, the same in every DMC training script (run_utils.Run holds `loop`)

# the loop's counters at the start of a run (each checkpoint saves them): agent and env steps, the running episode,
# the evaluation schedule and the last evaluation's returns, the latest update's metrics (tensors)
LOOP_START = {"global_step": 0, "step": 0, "episode_return": 0.0, "episode_length": 0, "next_eval": 0,
              "last_eval_step": -1, "returns": [], "metrics": {}}
# the arrays of the two replay layouts: frames stored once (the pixel scripts; sac_ae_frozen's latents), and whole
# observations (sac_state)
FRAME_ROWS = ["frames", "frame_idx", "actions", "rewards", "not_dones", "oldest_frame"]
OBS_ROWS = ["obs", "next_obs", "actions", "rewards", "not_dones"]


def evaluation(run: run_utils.Run, play, measure=None):
    """The loop's `evaluate(step)`: `play(video path or None)` returns the evaluation episodes' returns, logged with
    the metrics of `measure()` (the pixel scripts: the critic's invariance) and the time they took."""
    def evaluate(step: int) -> list[float]:
        t0 = time.time()
        print(f"eval at step {step}: {run.args.eval_episodes} episodes ...", flush=True)
        returns = play(run.dir / "videos" / f"eval_{step}.mp4" if run.args.capture_video else None)
        run_utils.log_evaluation(run.logger, step, returns, t0, **(measure() if measure else {}))
        return returns
    return evaluate


def evaluate_when_due(loop: dict, step: int, frequency: int, evaluate, final: bool = False) -> list[float]:
    """`evaluate(step)` at step 0, then at the first step past each multiple of `frequency` env steps (spec §1.4),
    and with `final` at the end unless that step was just evaluated; returns the last evaluation's returns."""
    if step >= loop["next_eval"] or (final and loop["last_eval_step"] != step):
        loop["returns"], loop["last_eval_step"] = evaluate(step), step
        loop["next_eval"] = (step // frequency + 1) * frequency
    return loop["returns"]


def end_step(run: run_utils.Run, reward: float, env_steps: int, episode_over: bool) -> bool:
    """After each agent step: one more agent step, `env_steps` more env steps and `reward` on the running episode;
    at the episode's end its point in metrics.jsonl (with the latest update's metrics), else a progress line when
    due. Returns `episode_over`, so the loop resets the env."""
    loop = run.loop
    loop["step"] += 1
    loop["global_step"] += env_steps
    loop["episode_return"] += reward
    loop["episode_length"] += env_steps
    run.progress.update(loop["global_step"])
    if episode_over:
        run.log_episode(loop["global_step"], loop["episode_return"], loop["episode_length"], loop["metrics"])
        loop["episode_return"], loop["episode_length"] = 0.0, 0
    elif run.progress.due():
        print(run.progress.line(loop["global_step"], None), flush=True)
    return episode_over


def resumable_updates(run: run_utils.Run, step: int, count: int, action: np.ndarray, state, burst: dict | None):
    """Indices of the `count` updates of env step `step` (SAC-AE's first updates: a thousand take minutes on a CPU),
    with progress lines. SIGINT/SIGTERM between two of them checkpoints `state()` with loop["burst"] (the step's
    `action`, the updates done) and exits; the resumed run passes that `burst` back and continues from there."""
    for i in range(burst["done"] if burst else 0, count):
        if run.interrupts.requested:
            run.loop["burst"] = {"action": action, "done": i}
            run.exit_interrupted(step, state)
        yield i
        if count > 1 and run.progress.due():
            print(f"{run.progress.line(step, None)} | first updates: {i + 1}/{count}", flush=True)


def replay_state(rb) -> dict:
    """The replay's part of a checkpoint: the written rows of each array (uint8 frames as stored) and the counters."""
    n = min(rb.added, rb.capacity)
    if hasattr(rb, "frames"):
        rows = dict.fromkeys(FRAME_ROWS, n) | {"frames": min(rb.frames_written, rb.num_frames)}
        return run_utils.rows_state(rb, rows, ["frames_written", "added", "start", "current"])
    return run_utils.rows_state(rb, dict.fromkeys(OBS_ROWS, n), ["added"])


def training_state(agent, rb, env: DMCEnv, eval_env: DMCEnv, **extra) -> dict:
    """A DMC run's part of checkpoint.pt (run_utils adds the flags, RNGs, `loop` and the logs' position): `extra`,
    the agent's networks, optimizers and temperature, the replay, and both envs mid-episode."""
    return {**extra, "agent": run_utils.parts_state(agent), "replay": replay_state(rb), "env": env.snapshot(),
            "eval_env": eval_env.snapshot()}


def restore(ckpt: dict, agent, rb, env: DMCEnv, eval_env: DMCEnv):
    """The inverse of training_state, then the RNGs: the resumed run continues as the uninterrupted one would have
    (tests/test_resume.py). Returns the observation the next step acts on."""
    run_utils.load_parts_state(agent, ckpt["agent"])
    run_utils.load_rows_state(rb, ckpt["replay"], FRAME_ROWS + OBS_ROWS)
    obs = env.restore(ckpt["env"])
    eval_env.restore(ckpt["eval_env"])
    run_utils.set_rng_state(ckpt["rng"])
    return obs

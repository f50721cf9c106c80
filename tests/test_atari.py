"""Atari 100k scripts (nddqn_atari.py, drq_dqn.py): each test checks behaviour against an independent computation."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import atari_envs
import drq_dqn
import nddqn_atari

ROOT = Path(__file__).resolve().parents[1]
GAMMA = 0.99


# ------------------------------------------------------------------------------------------------ replay buffer
def make_trajectory(rng: np.random.Generator, steps: int):
    """A raw trajectory with games, life losses and frame-limit truncations, as the training loop produces it:
    a list of rows (frame, action, reward, terminal, first, is_final)."""
    rows, first = [], True
    for t in range(steps):
        frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
        event = rng.random()
        terminal, truncated = event < 0.06, 0.06 <= event < 0.09
        rows.append((frame, int(rng.integers(4)), float(rng.integers(-1, 2)), terminal, first, False))
        if truncated:
            rows.append((rng.integers(0, 256, (84, 84), dtype=np.uint8), 0, 0.0, False, False, True))
        first = terminal or truncated
    return rows


def brute_force(rows, t: int, n: int, stack: int = 4):
    """n-step return, bootstrap discount and both stacks for the transition starting at absolute row t,
    by walking the raw trajectory one step at a time."""

    def state(r):
        frames, k = [], r
        while len(frames) < stack:
            frames.append(rows[k][0])
            if rows[k][4] or k == 0:  # segment start: the older positions are zero
                break
            k -= 1
        frames += [np.zeros((84, 84), np.uint8)] * (stack - len(frames))
        return np.stack(frames[::-1])

    ret, k = 0.0, 0
    while True:
        ret += GAMMA**k * rows[t + k][2]
        if rows[t + k][3]:  # terminal: no bootstrap
            return ret, 0.0, state(t), None, "terminal"
        if rows[t + k + 1][5]:  # truncation: bootstrap from the game's last frame
            return ret, GAMMA ** (k + 1), state(t), state(t + k + 1), "truncation"
        k += 1
        if k == n:
            return ret, GAMMA**n, state(t), state(t + n), "full"


@pytest.mark.parametrize("capacity", [10_000, 157])  # 157 < trajectory length: the circular buffer wraps
def test_nstep_sample_matches_brute_force(capacity):
    rng = np.random.default_rng(0)
    rows = make_trajectory(rng, 400)
    n = 10
    rb = drq_dqn.ReplayBuffer(capacity, n, GAMMA, 4, torch.device("cpu"))
    for frame, action, reward, terminal, first, is_final in rows:
        rb.add_final(frame) if is_final else rb.add(frame, action, reward, terminal, first)
    lo, hi = rb.sample_range()
    candidates = [t for t in range(lo, hi + 1) if not rows[t][5]]
    batch = rb.sample(0, rows=torch.tensor(candidates))
    kinds = []
    for i, t in enumerate(candidates):
        ret, discount, obs, next_obs, kind = brute_force(rows, t, n)
        assert batch["returns"][i].item() == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert batch["discounts"][i].item() == pytest.approx(discount, rel=1e-6)
        assert batch["actions"][i].item() == rows[t][1]
        assert np.array_equal(batch["obs"][i].numpy(), obs)
        if next_obs is not None:  # after a terminal the next state is irrelevant (discount 0)
            assert np.array_equal(batch["next_obs"][i].numpy(), next_obs)
        kinds.append(kind)
    # the trajectory exercised every way a window can end, and zero-padded stacks
    assert min(kinds.count(kind) for kind in ("terminal", "truncation", "full")) > 3
    assert (batch["obs"][:, 0] == 0).all(dim=(1, 2)).sum() > 10


def test_sampling_is_uniform_over_complete_transitions_and_skips_truncation_rows():
    rng = np.random.default_rng(1)
    rows = make_trajectory(rng, 300)
    rb = drq_dqn.ReplayBuffer(120, 10, GAMMA, 4, torch.device("cpu"))
    for frame, action, reward, terminal, first, is_final in rows:
        rb.add_final(frame) if is_final else rb.add(frame, action, reward, terminal, first)
    lo, hi = rb.sample_range()
    assert hi == len(rows) - 1 - 10  # the newest 10 rows cannot start a complete window
    assert lo == len(rows) - 120 + 3  # the oldest rows' stacks reach overwritten frames
    torch.manual_seed(0)
    drawn = rb.sample_rows(200_000).numpy()
    expected = {t for t in range(lo, hi + 1) if not rows[t][5]}
    assert set(np.unique(drawn)) == expected
    counts = np.bincount(drawn - lo)[[t - lo for t in sorted(expected)]]
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_buffer_memory_within_budget():
    rb = nddqn_atari.ReplayBuffer(100_000, 10, GAMMA, 4, torch.device("cpu"))
    nbytes = sum(t.numel() * t.element_size() for t in vars(rb).values() if isinstance(t, torch.Tensor))
    assert nbytes <= 0.75e9


def test_frame_stack_matches_buffer_stacks():
    """What the agent acts on equals what the buffer returns for the same steps, across a segment restart."""
    rng = np.random.default_rng(2)
    stack = atari_envs.FrameStack(4, torch.device("cpu"))
    rb = drq_dqn.ReplayBuffer(100, 1, GAMMA, 4, torch.device("cpu"))
    states = []
    for t in range(12):
        frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
        first = t in (0, 6)
        states.append((stack.reset(frame) if first else stack.push(frame)).clone())
        rb.add(frame, 0, 0.0, t == 5, first)
    got = rb.stacks(torch.arange(11))
    for t in range(11):
        assert torch.equal(got[t], states[t])


# ------------------------------------------------------------------------------------------------ networks and update
def zero_step_update(module, online, target, batch, args):
    """module.update, bound to args' values as main binds it, with a zero learning rate: its loss and mean Q, and the
    gradients it leaves, at unchanged weights."""
    loss, q_mean = module.make_update(args)(online, target, torch.optim.SGD(online.parameters(), lr=0.0), batch)
    return loss, q_mean, {name: p.grad.clone() for name, p in online.named_parameters()}


def test_dueling_head_subtracts_mean_advantage():
    torch.manual_seed(0)
    net = nddqn_atari.QNetwork(6)
    x = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    h = net.hidden(net.convs(x.float() / 255.0))
    adv, value = net.advantage(h), net.value(h)
    expected = value + adv - adv.mean(1, keepdim=True)
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert torch.allclose(net(x).mean(1, keepdim=True), value, atol=1e-5)
    assert not torch.allclose(net(x), value + adv, atol=1e-3)


@pytest.mark.parametrize("module", [nddqn_atari, drq_dqn])
def test_double_dqn_target_selects_online_evaluates_target(module):
    torch.manual_seed(0)
    online, target = module.QNetwork(4), module.QNetwork(4)
    with torch.no_grad():  # make the two networks prefer different actions, so selection matters
        online.advantage.bias.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
        target.advantage.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    b = 8
    batch = {"obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "next_obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "actions": torch.randint(0, 4, (b,)), "returns": torch.randn(b),
             "discounts": torch.tensor([GAMMA**10] * (b - 2) + [0.0, GAMMA**3])}
    args = module.Args(image_pad=0) if module is drq_dqn else module.Args()  # pad 0: no shift, exact comparison
    loss, q_mean, grads = zero_step_update(module, online, target, batch, args)
    with torch.no_grad():
        q_next_online, q_next_target = online(batch["next_obs"]), target(batch["next_obs"])
        double = q_next_target[torch.arange(b), q_next_online.argmax(1)]
        wrong = q_next_target.max(1).values  # vanilla DQN: select with the target network
    online.zero_grad()
    q_expected = online(batch["obs"])[torch.arange(b), batch["actions"]]
    expected = F.smooth_l1_loss(q_expected, batch["returns"] + batch["discounts"] * double)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert q_mean.item() == pytest.approx(q_expected.mean().item(), rel=1e-5)
    for name, p in online.named_parameters():  # the step the optimizer takes is the expected loss's gradient
        assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-7), name
    vanilla = F.smooth_l1_loss(q_expected, batch["returns"] + batch["discounts"] * wrong)
    assert abs(loss.item() - vanilla.item()) > 0.1


def test_target_synced_every_step_equals_using_the_online_network():
    """main() passes the online network as its own target when target_network_frequency == 1 (one forward pass
    fewer); the loss must equal the one computed with a separate, freshly synced copy."""
    torch.manual_seed(0)
    online = nddqn_atari.QNetwork(4)
    synced = nddqn_atari.QNetwork(4)
    nddqn_atari.sync_target(synced, online)
    b = 6
    batch = {"obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "next_obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "actions": torch.randint(0, 4, (b,)), "returns": torch.randn(b), "discounts": torch.full((b,), 0.9)}
    shared, _, shared_grads = zero_step_update(nddqn_atari, online, online, batch, nddqn_atari.Args())
    separate, _, separate_grads = zero_step_update(nddqn_atari, online, synced, batch, nddqn_atari.Args())
    assert shared.item() == pytest.approx(separate.item(), rel=1e-6)
    assert all(torch.equal(shared_grads[name], separate_grads[name]) for name in shared_grads)


def test_drq_target_and_loss_average_k_and_m_shifted_copies():
    torch.manual_seed(0)
    online, target = drq_dqn.QNetwork(3), drq_dqn.QNetwork(3)
    b, k, m = 4, 3, 2
    batch = {"obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "next_obs": torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8),
             "actions": torch.randint(0, 3, (b,)), "returns": torch.randn(b), "discounts": torch.full((b,), 0.9)}
    args = drq_dqn.Args(k=k, m=m)
    torch.manual_seed(5)
    loss, _, _ = zero_step_update(drq_dqn, online, target, batch, args)
    # the same random draws, consumed in the same order, copy by copy
    torch.manual_seed(5)
    next_aug = drq_dqn.random_shift(batch["next_obs"].repeat(k, 1, 1, 1), 4).view(k, b, 4, 84, 84)
    obs_aug = drq_dqn.random_shift(batch["obs"].repeat(m, 1, 1, 1), 4).view(m, b, 4, 84, 84)
    with torch.no_grad():
        targets = []
        for c in range(k):
            a_star = online(next_aug[c]).argmax(1)
            targets.append(batch["returns"] + 0.9 * target(next_aug[c])[torch.arange(b), a_star])
        y = torch.stack(targets).mean(0)
    losses = [F.smooth_l1_loss(online(obs_aug[c])[torch.arange(b), batch["actions"]], y) for c in range(m)]
    assert loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ augmentation
def edge_shift(sample: np.ndarray, dy: int, dx: int, pad: int = 4) -> np.ndarray:
    padded = np.pad(sample, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = sample.shape[1:]
    return padded[:, pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def test_random_shift_is_an_exact_edge_replicated_translation_per_sample():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8)
    out = drq_dqn.random_shift(x, 4).numpy()
    shifts = []
    for i in range(64):
        # the whole (4, 84, 84) sample must match one translation: all stacked frames share the shift
        matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                   if np.array_equal(out[i], edge_shift(x[i].numpy(), dy, dx))]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert len(set(shifts)) > 20  # independent shifts across the batch, from 81 possible
    assert {dy for dy, _ in shifts} == set(range(-4, 5))  # both ends of [-4, 4] are reachable


def test_random_shift_zero_is_identity_and_given_shift_is_applied():
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    assert torch.equal(drq_dqn.random_shift(x, 4, torch.zeros(3, 2, dtype=torch.long)), x)
    shift = torch.tensor([[4, -4], [-1, 2], [0, 3]])
    out = drq_dqn.random_shift(x, 4, shift).numpy()
    for i, (dy, dx) in enumerate(shift.tolist()):
        assert np.array_equal(out[i], edge_shift(x[i].numpy(), dy, dx))


def test_augment_copies_are_independent_and_intensity_is_per_sample():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    out = drq_dqn.augment(x, 2, 4, 0.0)
    assert out.shape == (16, 4, 84, 84) and out.dtype == torch.uint8
    assert not torch.equal(out[:8], out[8:])
    x = x.clamp(min=1)  # no zero pixels, so the ratio below is defined everywhere
    noisy = drq_dqn.augment(x, 1, 0, 0.05)  # pad 0: no shift, only intensity
    per_sample = (noisy / x.float()).flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-5)
    assert ((per_sample[:, 0] - 1).abs() <= 0.1 + 1e-6).all() and per_sample[:, 0].std() > 0


# ------------------------------------------------------------------------------------------------ exploration
@pytest.mark.parametrize("end_e,expected", [
    (0.1, {0: 1.0, 1599: 1.0, 1600: 1.0, 4100: 0.55, 6600: 0.1, 50_000: 0.1}),
    (0.01, {0: 1.0, 1599: 1.0, 1600: 1.0, 4100: 0.505, 6600: 0.01, 99_999: 0.01}),
])
def test_epsilon_schedule(end_e, expected):
    for step, eps in expected.items():
        assert drq_dqn.linear_schedule(step, 1600, 5000, 1.0, end_e) == pytest.approx(eps)


# ------------------------------------------------------------------------------------------------ scores
def test_hns_of_published_drq_gives_published_median():
    with open(ROOT / "reference" / "atari_100k_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 26
    hns = [atari_envs.human_normalized_score(r["game"], float(r["drq_reported_final"])) for r in rows]
    assert np.median(hns) == pytest.approx(0.284, abs=5e-4)  # spec §2.5: DrQ (ilya) median 0.284, mean 0.370
    assert np.mean(hns) == pytest.approx(0.370, abs=5e-4)
    assert atari_envs.human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert atari_envs.human_normalized_score("Tetris", 1.0) is None


# ------------------------------------------------------------------------------------------------ environment protocol
class LifeRecorder(gym.Wrapper):
    """Counts ALE life losses and records the lives trace of every finished game, per environment instance."""

    def __init__(self, env):
        super().__init__(env)
        self.games, self.trace, self.life_losses = [], [], 0

    def reset(self, **kwargs):
        out = super().reset(**kwargs)
        self.trace = [self.env.unwrapped.ale.lives()]
        return out

    def step(self, action):
        out = super().step(action)
        lives = self.env.unwrapped.ale.lives()
        self.life_losses += lives < self.trace[-1]
        self.trace.append(lives)
        if out[2] or out[3]:
            self.games.append(self.trace)
        return out


def recording(monkeypatch, module, name: str) -> list:
    """Replace module.<name> by a factory that also keeps every object it builds."""
    made, real = [], getattr(module, name)

    def factory(*a, **k):
        made.append(LifeRecorder(real(*a, **k)) if name == "make_env" else real(*a, **k))
        return made[-1]

    monkeypatch.setattr(module, name, factory)
    return made


def test_evaluation_plays_complete_games_across_life_losses(monkeypatch):
    envs = recording(monkeypatch, atari_envs, "make_env")
    returns, steps = drq_dqn.evaluate(drq_dqn.QNetwork(4), "BreakoutNoFrameskip-v4", 0, 3, 0, 1.0,
                                      torch.device("cpu"))
    (env,) = envs
    assert len(returns) == len(env.games) == 3
    for trace in env.games:
        assert trace[0] == 5 and trace[-1] == 0  # one evaluation episode spans all five lives
    assert steps == sum(len(trace) - 1 for trace in env.games)


def test_step_based_evaluation_finishes_the_last_game(monkeypatch):
    envs = recording(monkeypatch, atari_envs, "make_env")
    returns, steps = nddqn_atari.evaluate(nddqn_atari.QNetwork(6), "PongNoFrameskip-v4", 0, 1, 1500, 1.0,
                                          torch.device("cpu"))
    (env,) = envs
    assert steps >= 1500 and len(returns) == len(env.games)  # the game crossing 1500 steps is played to the end
    assert steps - (len(env.games[-1]) - 1) < 1500


def test_learner_sees_life_losses_as_terminals(monkeypatch, tmp_path):
    envs = recording(monkeypatch, atari_envs, "make_env")
    buffers = recording(monkeypatch, drq_dqn, "ReplayBuffer")
    args = drq_dqn.Args(env_id="Breakout", total_timesteps=700, learning_starts=650, log_interval=100,
                        eval_episodes=1, runs_dir=str(tmp_path), cuda=False, batch_size=8)
    drq_dqn.main(args)
    train_env, rb = envs[0], buffers[0]
    terminals = rb.terminals[: rb.count]
    assert train_env.life_losses > len(train_env.games)  # more lives were lost than games ended
    assert int(terminals.sum()) == train_env.life_losses  # ...and each loss is stored as a terminal
    assert rb.first[1: rb.count][terminals[:-1]].all()  # the next row restarts the frame stack


# ------------------------------------------------------------------------------------------------ scripts end to end
def run_script(script: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / script), *flags], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("script,extra", [
    ("nddqn_atari.py", []),
    ("drq_dqn.py", ["--k", "2", "--m", "2", "--track", "--wandb-mode", "offline"]),  # wandb needs no network
])
def test_smoke_trains_evaluates_saves_and_reloads(script, extra, tmp_path):
    runs = tmp_path / "runs"
    run_script(script, "--env-id", "Pong", "--total-timesteps", "400", "--learning-starts", "200",
               "--log-interval", "100", "--eval-episodes", "1", "--batch-size", "16", "--no-cuda",
               "--save-model", "--runs-dir", str(runs), *extra)
    (run,) = runs.iterdir()
    args = json.loads((run / "args.json").read_text())
    assert args["env_id"] == "Pong" and args["algo"] == script[:-3]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/td_loss" in m and m["global_step"] > 200 for m in metrics)  # updates really ran
    final = json.loads((run / "final.json").read_text())
    for key in ("env_id", "algo", "seed", "total_timesteps", "eval_episodes", "mean_return", "std_return",
                "returns", "hns", "wall_time_s"):
        assert key in final
    assert final["env_id"] == "PongNoFrameskip-v4" and final["total_timesteps"] == 400
    assert final["eval_episodes"] == len(final["returns"]) == 1
    assert final["mean_return"] == pytest.approx(np.mean(final["returns"]))
    assert -21 <= final["mean_return"] <= 21
    assert final["hns"] == pytest.approx((final["mean_return"] + 20.7) / (14.6 + 20.7))
    assert bool(list(run.glob("wandb/offline-run-*/run-*.wandb"))) == ("--track" in extra)

    reloaded = tmp_path / "reloaded"
    run_script(script, "--env-id", "Pong", "--eval-checkpoint", str(run / "model.pt"), "--eval-episodes", "1",
               "--no-cuda", "--runs-dir", str(reloaded))
    final2 = json.loads(next(reloaded.iterdir()).joinpath("final.json").read_text())
    assert final2["evaluated_checkpoint"] == str(run / "model.pt") and final2["total_timesteps"] == 400
    # same weights, same evaluation seed and epsilon draws: the same game
    assert final2["returns"] == final["returns"]


@pytest.mark.parametrize("script,recipes", [("nddqn_atari.py", ("efficient-dqn", "efficient-dqn-eps")),
                                             ("drq_dqn.py", ("drq", "drq-eps"))])
def test_help_lists_flags_and_recipes(script, recipes):
    out = run_script(script, "--help").stdout
    for flag in ("--env-id", "--total-timesteps", "--end-e", "--eval-epsilon", "--n-step", "--save-model",
                 "--noop-mode", "--replay-sampling", "--finish-last-game", *recipes):
        assert flag in out
    assert "(default: " + recipes[0] + ")" in out
    assert ("--intensity-scale" in out) == ("--shift-per" in out) == (script == "drq_dqn.py")



# ------------------------------------------------------------------------------------------------ SAME padding
def test_same_padding_follows_the_tf_formula_layer_by_layer():
    net = drq_dqn.QNetwork(4, padding="same")
    seen = []  # (input size, padding, kernel, stride) of every conv, as the forward pass meets them
    for pad, conv in zip(net.convs[0::3], net.convs[1::3]):
        assert isinstance(pad, torch.nn.ZeroPad2d) and isinstance(conv, torch.nn.Conv2d)
        pad.register_forward_hook(lambda m, inp, out, seen=seen: seen.append([inp[0].shape[-1], m.padding]))
        conv.register_forward_hook(lambda m, inp, out, seen=seen: seen[-1].extend([m.kernel_size[0], m.stride[0],
                                                                                   out.shape[-1]]))
    features = net.convs(torch.zeros(1, 4, 84, 84))
    for n, (left, right, top, bottom), k, s, n_out in seen:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        assert (left, top) == (total // 2, total // 2) and (right, bottom) == (total - total // 2,) * 2
        assert n_out == math.ceil(n / s)  # SAME keeps ceil(n / s) positions
    assert [pad for _, pad, *_ in seen] == [(2, 2, 2, 2), (1, 2, 1, 2), (1, 1, 1, 1)]
    assert features.shape == (1, 11 * 11 * 64) and net.hidden[0].in_features == 7744
    assert nddqn_atari.QNetwork(4).hidden[0].in_features == 7 * 7 * 64  # valid padding is unchanged


def test_same_padded_network_equals_convolutions_of_explicitly_padded_inputs():
    torch.manual_seed(0)
    net = drq_dqn.QNetwork(5, padding="same")
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    h = x.float() / 255.0
    for conv in [m for m in net.convs if isinstance(m, torch.nn.Conv2d)]:
        n, k, s = h.shape[-1], conv.kernel_size[0], conv.stride[0]
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        padded = F.pad(h, (total // 2, total - total // 2, total // 2, total - total // 2))
        h = F.relu(F.conv2d(padded, conv.weight, conv.bias, stride=s, padding=0))
    hidden = net.hidden(h.flatten(1))
    adv = net.advantage(hidden)
    assert h.shape[1:] == (64, 11, 11)
    assert torch.allclose(net(x), net.value(hidden) + adv - adv.mean(1, keepdim=True), atol=1e-5)


# ------------------------------------------------------------------------------------------------ recipes
def test_recipes_hold_the_references_values_and_flags_override_them():
    default = drq_dqn.parse_args(["--env-id", "Pong", "--end-e", "0.02"])
    assert default.recipe == "drq" and default.env_id == "Pong" and default.end_e == 0.02
    assert drq_dqn.parse_args([]) == drq_dqn.Args() and drq_dqn.Args().end_e == 0.1
    args = drq_dqn.parse_args(["drq-eps", "--env-id", "Breakout", "--seed", "1"])
    # dopamine labs/atari_100k at 8de9df0: configs/DrQ_eps.gin, atari_100k_rainbow_agent.py, eval_run_experiment.py,
    # jax/networks.py, discrete_domains/run_experiment.py and atari_lib.py, replay_memory/* (spec §2.7)
    expected = {"recipe": "drq-eps", "env_id": "Breakout", "seed": 1, "end_e": 0.01, "eval_epsilon": 0.001,
                "intensity_scale": 0.05, "conv_padding": "same", "shift_range": "asymmetric", "shift_per": "batch",
                "noop_mode": "dopamine", "noop_max": 30, "life_loss_ends_frame_skip": True, "max_episode_frames": 0,
                "max_episode_steps": 27_000, "finish_last_game": True, "buffer_size": 1_000_000,
                "truncated_windows": "drop", "replay_sampling": "dopamine", "step_counting": "dopamine",
                "n_step": 10, "gamma": 0.99, "learning_starts": 1600, "exploration_steps": 5000, "batch_size": 32,
                "learning_rate": 1e-4, "adam_eps": 1.5e-4, "target_network_frequency": 1, "max_grad_norm": 0.0,
                "eval_episodes": 100, "total_timesteps": 100_000, "k": 1, "m": 1, "image_pad": 4}
    assert {key: getattr(args, key) for key in expected} == expected
    override = drq_dqn.parse_args(["drq-eps", "--intensity-scale", "0", "--shift-per", "image", "--buffer-size", "5"])
    assert (override.intensity_scale, override.shift_per, override.buffer_size, override.end_e) == (0, "image", 5, 0.01)
    baseline = nddqn_atari.parse_args(["efficient-dqn-eps"])
    assert nddqn_atari.parse_args([]) == nddqn_atari.Args() and nddqn_atari.Args().recipe == "efficient-dqn"
    assert baseline.recipe == "efficient-dqn-eps" and not hasattr(baseline, "intensity_scale")
    shared = [key for key in vars(baseline) if key not in ("recipe", "exp_name")]
    assert {key: getattr(baseline, key) for key in shared} == {key: getattr(args, key) for key in shared}


def test_drq_eps_smoke_records_its_recipe_and_runs_dopamines_protocol(tmp_path):
    runs = tmp_path / "runs"
    flags = ["drq-eps", "--env-id", "Breakout", "--total-timesteps", "300", "--learning-starts", "150",
             "--max-episode-steps", "100", "--buffer-size", "2000", "--log-interval", "100", "--eval-episodes", "1",
             "--batch-size", "16", "--no-cuda", "--runs-dir", str(runs)]
    run_script("drq_dqn.py", *flags)
    (run,) = runs.iterdir()
    recorded = json.loads((run / "args.json").read_text())
    resolved = vars(drq_dqn.parse_args(flags))
    assert {key: recorded[key] for key in resolved} == resolved and recorded["recipe"] == "drq-eps"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # dopamine's agent evaluates its schedule after counting the step: at our step 299 it uses 300
    (eps_300,) = [m["charts/epsilon"] for m in metrics if m["global_step"] == 300 and "charts/epsilon" in m]
    assert eps_300 == pytest.approx(1.0 - 0.99 * (300 - 150) / 5000)
    assert any("losses/td_loss" in m for m in metrics)
    final = json.loads((run / "final.json").read_text())
    # the game running at step 300 is played out (games are cut at 100 steps here), learning all the while
    games = [m["global_step"] for m in metrics if "charts/episodic_return" in m]
    assert 300 <= final["total_timesteps"] < 300 + 100 and games[-1] == final["total_timesteps"] - 1
    assert final["eval_episodes"] == 1 and final["eval_steps"] <= 100


# ------------------------------------------------------------------------------------------------ shift draws
def shifts_of(out: torch.Tensor) -> np.ndarray:
    """(dy, dx) of each augmented sample of coordinate_images: the centre pixel holds its source row and column."""
    return (out[:, :2, 42, 42].long() - 42).numpy()


def coordinate_images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 4, 84, 84, dtype=torch.uint8)
    x[:, 0] = torch.arange(84, dtype=torch.uint8)[:, None]
    x[:, 1] = torch.arange(84, dtype=torch.uint8)[None, :]
    return x


@pytest.mark.parametrize("shift_range,values", [("symmetric", range(-4, 5)), ("asymmetric", range(-4, 4))])
def test_shift_range_symmetric_or_dopamines(shift_range, values):
    torch.manual_seed(0)
    shifts = shifts_of(drq_dqn.augment(coordinate_images(3000), 1, 4, 0.0, shift_range))
    assert set(shifts[:, 0]) == set(shifts[:, 1]) == set(values)  # under drq-eps no shift is ever +4


@pytest.mark.parametrize("shift_per", ["image", "batch"])
def test_one_shift_per_image_or_per_batch(shift_per):
    torch.manual_seed(0)
    b, copies = 16, 3
    for _ in range(20):
        shifts = shifts_of(drq_dqn.augment(coordinate_images(b), copies, 4, 0.0, "symmetric", shift_per))
        per_copy = [len({tuple(s) for s in shifts[c * b:(c + 1) * b]}) for c in range(copies)]
        # per batch: every image of a copy moves alike (each copy of the batch has its own draw)
        assert (max(per_copy) == 1) == (shift_per == "batch")
    x = coordinate_images(b)
    assert torch.equal(drq_dqn.augment(x, 2, 4, 0.0, shift=torch.tensor([[1, -2], [3, 0]]))[b:],
                       drq_dqn.random_shift(x, 4, torch.tensor([[3, 0]] * b)))  # a given shift per copy


# ------------------------------------------------------------------------------------------------ dopamine's env
def test_noop_modes():
    frames, first_obs = {}, {}
    reset_frame = atari_envs.make_env("PongNoFrameskip-v4", 0, noop_max=0).reset(seed=0)[0]
    for mode in ("gymnasium", "dopamine"):
        env = atari_envs.make_env("PongNoFrameskip-v4", 0, noop_max=30, noop_mode=mode)
        frames[mode], first_obs[mode] = set(), []
        for seed in range(150):  # each seed draws its own number of no-ops
            obs, _ = env.reset(seed=seed)
            frames[mode].add(env.unwrapped.ale.getEpisodeFrameNumber())
            first_obs[mode].append(np.array_equal(obs, reset_frame))
    assert frames["gymnasium"] == set(range(1, 31)) and frames["dopamine"] == set(range(0, 30))
    # dopamine's runner steps the ALE past its screen buffer: every game starts from the frame before the no-ops
    assert all(first_obs["dopamine"]) and not all(first_obs["gymnasium"])


def test_a_life_loss_ends_the_frame_skip_only_under_its_flag():
    env_id, rng = "BreakoutNoFrameskip-v4", np.random.default_rng(0)
    actions = rng.integers(0, 4, 2000)
    raw = gym.make(env_id, repeat_action_probability=0.0, full_action_space=False, frameskip=1)
    raw.reset(seed=0)
    lives = raw.unwrapped.ale.lives()
    for frame, action in enumerate(np.repeat(actions, 4), start=1):  # frame by frame, 4 frames per agent action
        raw.step(action)
        if raw.unwrapped.ale.lives() < lives:
            break
    plain, stops = (atari_envs.make_env(env_id, 0, noop_max=0, life_loss_ends_frame_skip=flag) for flag in (False, True))
    (obs_p, info_p), (obs_s, info_s) = plain.reset(seed=0), stops.reset(seed=0)
    for action in actions:
        assert np.array_equal(obs_p, obs_s)  # the same frames as gymnasium's AtariPreprocessing until then
        (obs_p, _, _, _, info_p), (obs_s, _, _, _, info_s) = plain.step(action), stops.step(action)
        if info_s["lives"] < 5:
            break
    assert frame % 4 != 0  # the life is lost inside an agent step, so the two behaviours differ
    assert stops.unwrapped.ale.getEpisodeFrameNumber() == frame  # the step ended at the life loss
    assert plain.unwrapped.ale.getEpisodeFrameNumber() == 4 * math.ceil(frame / 4)  # it played the step out
    assert info_p["lives"] == 4


def test_max_episode_steps_cuts_games_in_agent_steps():
    returns, steps = drq_dqn.evaluate(drq_dqn.QNetwork(6), "PongNoFrameskip-v4", 0, 3, 0, 1.0, torch.device("cpu"),
                                      max_episode_steps=40, noop_mode="dopamine")
    assert len(returns) == 3 and steps == 120


# ------------------------------------------------------------------------------------------------ dopamine's replay
def dopamine_valid_rows(rows, n: int, drop: bool, newest_rule: bool) -> set[int]:
    """Brute force over dopamine's storage: 3 zero slots before every segment, no slot for our truncation rows, and
    circular_replay_buffer.is_valid_transition literally (cursor, terminal stack, non-terminal episode ends)."""
    store, slot_of = [], {}  # store: (terminal, non-terminal episode end)
    for r, (_, _, _, terminal, first, is_final) in enumerate(rows):
        if is_final:
            store[-1] = (store[-1][0], True)  # the transition before a truncation row ended its game by the cut
            continue
        if first:
            store += [(False, False)] * 3
        slot_of[r] = len(store)
        store.append((terminal, False))
    valid = set()
    for r, i in slot_of.items():
        if newest_rule and i >= len(store) - n:
            continue
        if any(store[j][0] for j in range(i - 3, i)):
            continue
        if drop and any(store[j][1] for j in range(i, min(i + n, len(store)))):
            continue
        valid.add(r)
    return valid


def filled(rows, **options) -> "drq_dqn.ReplayBuffer":
    rb = drq_dqn.ReplayBuffer(10_000, 10, GAMMA, 4, torch.device("cpu"), **options)
    for frame, action, reward, terminal, first, is_final in rows:
        rb.add_final(frame) if is_final else rb.add(frame, action, reward, terminal, first)
    return rb


@pytest.mark.parametrize("windows,sampling", [("bootstrap", "dopamine"), ("drop", "dopamine"), ("drop", "iid")])
def test_replay_samples_exactly_dopamines_valid_transitions(windows, sampling):
    rows = make_trajectory(np.random.default_rng(3), 400)
    rb = filled(rows, truncated_windows=windows, sampling=sampling)
    torch.manual_seed(0)
    drawn = torch.cat([rb.sample_rows(32) for _ in range(3000)]).numpy()
    ours = {t for t in range(len(rows) - 10) if not rows[t][5]}  # our newest-n rule in rows, not slots
    expected = dopamine_valid_rows(rows, 10, windows == "drop", sampling == "dopamine")
    assert set(np.unique(drawn)) == (expected if sampling == "dopamine" else expected & ours)
    assert expected != dopamine_valid_rows(rows, 10, windows != "drop", sampling == "dopamine")  # the flags matter
    counts = np.unique(drawn, return_counts=True)[1]
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    batch = rb.sample(64)  # the windows dopamine samples are complete: returns and stacks as for iid draws
    assert torch.isfinite(batch["returns"]).all()


@pytest.mark.parametrize("sampling", ["iid", "dopamine"])
def test_dopamine_sampling_draws_once_in_each_stratum(sampling):
    rows = make_trajectory(np.random.default_rng(4), 640)  # 640 transitions: strata of exactly 20
    rb = filled(rows, sampling=sampling)
    transitions = np.array([t for t in range(len(rows)) if not rows[t][5]])
    assert len(transitions) == 640
    torch.manual_seed(0)
    for _ in range(50):
        strata = np.searchsorted(transitions, rb.sample_rows(32).numpy()) * 32 // len(transitions)
        # a redraw (an invalid newest row) may land anywhere, so allow one stratum to repeat
        assert (len(set(strata)) >= 31) == (sampling == "dopamine")


def test_dopamine_step_counting_counts_zero_slots_and_skips_the_last_update():
    rows = make_trajectory(np.random.default_rng(5), 300)
    rb = filled(rows)
    segments = sum(first for *_, first, is_final in rows if not is_final)
    transitions = sum(not is_final for *_, is_final in rows)
    assert rb.slot_count == transitions + 3 * segments  # dopamine's add_count after the same transitions
    step = transitions - 1
    agent, dopamine = drq_dqn.Args(learning_starts=step), drq_dqn.Args(step_counting="dopamine")
    assert not drq_dqn.learns_now(step - 1, rb, False, agent) and drq_dqn.learns_now(step, rb, False, agent)
    for learning_starts, expected in ((rb.slot_count - 1, True), (rb.slot_count, False)):
        dopamine.learning_starts = learning_starts
        assert drq_dqn.learns_now(step, rb, False, dopamine) == expected
    dopamine.learning_starts = 10
    assert drq_dqn.learns_now(step, rb, False, dopamine) and not drq_dqn.learns_now(step, rb, True, dopamine)

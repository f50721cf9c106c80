"""drq_dqn.py's `drq-eps` recipe against google/dopamine's labs/atari_100k DrQ(eps) agent, one update at a time.

Opt-in (marker `reference`, excluded by default): set DOPAMINE_CHECKOUT to a checkout of google/dopamine (the folder
that holds dopamine/labs/atari_100k) and run `python -m pytest -m reference tests/test_reference_atari.py` with a
Python that has this project's packages and dopamine's (jax, flax, optax, gin-config, tensorflow, gym, opencv);
README "Differences from the reference code" gives the commands. Both sides start from the same weights (dopamine's
initialisation, copied into ours), see the same batch and the same augmentation draws, and must agree to float32
rounding in the loss, every gradient and every parameter after the Adam step. Only this file imports dopamine."""
import inspect
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import drq_dqn

pytestmark = pytest.mark.reference

CHECKOUT = os.environ.get("DOPAMINE_CHECKOUT")
if not CHECKOUT:
    pytest.skip("DOPAMINE_CHECKOUT is not set", allow_module_level=True)
if not (Path(CHECKOUT) / "dopamine" / "labs" / "atari_100k").is_dir():
    pytest.fail(f"DOPAMINE_CHECKOUT={CHECKOUT} holds no dopamine/labs/atari_100k", pytrace=False)

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
optax = pytest.importorskip("optax")
import jax.interpreters.xla  # noqa: E402

if not hasattr(jax.interpreters.xla, "DeviceArray"):
    # 2021 trees annotate their (unused here) noisy layer with a type that newer JAX releases dropped
    jax.interpreters.xla.DeviceArray = jax.Array
sys.path.insert(0, CHECKOUT)
from dopamine.jax import networks  # noqa: E402
from dopamine.jax.agents.dqn import dqn_agent  # noqa: E402
from dopamine.jax.agents.full_rainbow import full_rainbow_agent  # noqa: E402
from dopamine.labs.atari_100k import atari_100k_rainbow_agent  # noqa: E402

N_ACTIONS = 6
PER_IMAGE = hasattr(atari_100k_rainbow_agent, "_per_image_random_crop")  # trees from 1bb064b (Feb 2022) on


def recipe() -> drq_dqn.Args:
    args = drq_dqn.parse_args(["drq-eps"])
    if PER_IMAGE:  # the flag that switches to the later trees' crop (spec §2.7)
        args.shift_per = "image"
    return args


def gin_bindings() -> dict[str, str]:
    text = (Path(CHECKOUT) / "dopamine/labs/atari_100k/configs/DrQ_eps.gin").read_text()
    return {name: value.split("#")[0].strip() for name, value in re.findall(r"^([\w.]+)\s*=\s*(.+)$", text, re.M)}


def test_drq_eps_recipe_has_the_values_of_dopamines_config():
    gin, args = gin_bindings(), recipe()
    expected = {
        "JaxDQNAgent.gamma": args.gamma, "JaxDQNAgent.update_horizon": args.n_step,
        "JaxDQNAgent.min_replay_history": args.learning_starts, "JaxDQNAgent.update_period": args.train_frequency,
        "JaxDQNAgent.target_update_period": args.target_network_frequency,
        "JaxDQNAgent.epsilon_train": args.end_e, "JaxDQNAgent.epsilon_eval": args.eval_epsilon,
        "JaxDQNAgent.epsilon_decay_period": args.exploration_steps,
        "create_optimizer.learning_rate": args.learning_rate, "create_optimizer.eps": args.adam_eps,
        "Runner.max_steps_per_episode": args.max_episode_steps,
        "MaxEpisodeEvalRunner.num_eval_episodes": args.eval_episodes,
        "OutOfGraphPrioritizedReplayBuffer.replay_capacity": args.buffer_size,
        "OutOfGraphPrioritizedReplayBuffer.batch_size": args.batch_size,
    }
    for name, value in expected.items():
        assert float(gin[name]) == pytest.approx(value), name
    assert int(gin["Runner.num_iterations"]) * int(gin["Runner.training_steps"]) == args.total_timesteps
    assert gin["JaxFullRainbowAgent.replay_scheme"] == "'uniform'"
    for name, value in {"noisy": "False", "dueling": "True", "double_dqn": "True", "distributional": "False"}.items():
        assert gin[f"JaxFullRainbowAgent.{name}"] == value
    assert gin["Atari100kRainbowAgent.data_augmentation"] == "True" and args.intensity_scale == 0.05
    assert gin["atari_lib.create_atari_environment.sticky_actions"] == "False"
    assert gin["AtariPreprocessing.terminal_on_life_loss"] == "True" and args.life_loss_ends_frame_skip


def flax_to_torch(params) -> dict[str, torch.Tensor]:
    """dopamine's FullRainbowNetwork parameters (NHWC convs, HWC flatten) as QNetwork's state dict (NCHW, CHW)."""
    p = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(params))["params"]
    conv_rows = [name for name, module in drq_dqn.QNetwork(N_ACTIONS, padding="same").convs.named_children()
                 if isinstance(module, torch.nn.Conv2d)]
    out = {}
    for i, row in enumerate(conv_rows):
        out[f"convs.{row}.weight"] = p[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1)
        out[f"convs.{row}.bias"] = p[f"Conv_{i}"]["bias"]
    hidden = p["Dense_0"]["kernel"]  # rows in (h, w, c) order of the 11x11x64 SAME features
    out["hidden.0.weight"] = hidden.reshape(11, 11, 64, -1).transpose(3, 2, 0, 1).reshape(hidden.shape[1], -1)
    out["hidden.0.bias"] = p["Dense_0"]["bias"]
    for name, dense in (("advantage", "Dense_1"), ("value", "Dense_2")):  # created in this order by __call__
        out[f"{name}.weight"], out[f"{name}.bias"] = p[dense]["kernel"].T, p[dense]["bias"]
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in out.items()}


def dopamine_draws(key, batch: int, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop offsets and intensity normals that drq_image_augmentation draws from `key`, as our (dy, dx) shifts
    and N(0,1) noise: the same key splits and calls. The test checks them against dopamine's augmented output."""
    key_intensity, key_crop = jax.random.split(key, num=2)
    key_rows, key_cols = jax.random.split(key_crop, 2)
    shape = (batch,) if PER_IMAGE else ()
    rows = np.asarray(jax.random.randint(key_rows, shape=shape, minval=0, maxval=2 * pad))
    cols = np.asarray(jax.random.randint(key_cols, shape=shape, minval=0, maxval=2 * pad))
    shift = np.stack([np.atleast_1d(rows), np.atleast_1d(cols)], axis=1) - pad
    noise = np.asarray(jax.random.normal(key_intensity, shape=(batch, 1, 1, 1))).reshape(batch)
    return torch.from_numpy(shift).long(), torch.from_numpy(noise)


def nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def assert_close(ours: torch.Tensor, theirs: np.ndarray, what: str, rtol: float = 1e-4) -> None:
    """Equal up to float32 rounding relative to the tensor's scale (convolutions sum in different orders)."""
    ours, theirs = ours.detach().double().numpy(), np.asarray(theirs, dtype=np.float64)
    scale = max(np.abs(theirs).max(), 1e-12)
    assert ours.shape == theirs.shape, what
    assert np.abs(ours - theirs).max() <= rtol * scale, f"{what}: max error {np.abs(ours - theirs).max() / scale:.2e}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_drq_eps_update_matches_dopamine(seed, monkeypatch):
    args = recipe()
    b = args.batch_size
    rng = np.random.default_rng(seed)
    # a replay batch as dopamine's buffer returns it: NHWC stacks (newest frame last), n-step returns, terminals
    states = rng.integers(0, 256, (b, 84, 84, 4), dtype=np.uint8)
    next_states = rng.integers(0, 256, (b, 84, 84, 4), dtype=np.uint8)
    actions = rng.integers(0, N_ACTIONS, b).astype(np.int32)
    rewards = rng.normal(0.0, 2.0, b).astype(np.float32)
    terminals = (rng.random(b) < 0.25).astype(np.uint8)
    cumulative_gamma = args.gamma ** args.n_step

    # dopamine: the network, support and optimizer as JaxFullRainbowAgent builds them under DrQ_eps.gin; a first
    # transformation in the chain records the gradients the Adam step receives
    network_def = networks.FullRainbowNetwork(num_actions=N_ACTIONS, num_atoms=1, noisy=False, dueling=True,
                                              distributional=False, inputs_preprocessed=True)
    support = jax.numpy.linspace(-10.0, 10.0, 1)
    params = network_def.init(jax.random.PRNGKey(seed), x=jax.numpy.zeros((84, 84, 4)), support=support)
    record = optax.GradientTransformation(lambda p: p, lambda g, state, p=None: (g, g))
    optimizer = optax.chain(record, dqn_agent.create_optimizer("adam", learning_rate=args.learning_rate,
                                                              eps=args.adam_eps))
    key_states, key_next = jax.random.split(jax.random.PRNGKey(1000 + seed))
    aug_states = atari_100k_rainbow_agent.preprocess_inputs_with_augmentation(states, True, rng=key_states)
    aug_next = atari_100k_rainbow_agent.preprocess_inputs_with_augmentation(next_states, True, rng=key_next)
    inputs = dict(network_def=network_def, online_params=params, target_params=params, optimizer=optimizer,
                  optimizer_state=optimizer.init(params), states=aug_states, actions=actions, next_states=aug_next,
                  rewards=rewards, terminals=terminals, loss_weights=jax.numpy.ones(b), support=support,
                  cumulative_gamma=cumulative_gamma, double_dqn=True, distributional=False, mse_loss=False,
                  rng=jax.random.PRNGKey(0))
    names = inspect.signature(full_rainbow_agent.train).parameters
    opt_state, new_params, _, mean_loss, _ = full_rainbow_agent.train(*[inputs[name] for name in names])

    # ours: the same weights, batch and draws through drq_dqn.update
    q_network = drq_dqn.QNetwork(N_ACTIONS, padding=args.conv_padding)
    q_network.load_state_dict(flax_to_torch(params))
    q_theirs = jax.vmap(lambda s: network_def.apply(params, s, support=support).q_values)(states / 255.0)
    assert_close(q_network(nchw(states)), q_theirs, "Q values before the update", rtol=1e-5)

    draws = iter([dopamine_draws(key_next, b), dopamine_draws(key_states, b)])  # update augments s' first
    augment, augmented = drq_dqn.augment, []

    def with_dopamine_draws(x, *rest, **kwargs):
        shift, noise = next(draws)
        augmented.append(augment(x, *rest, shift=shift, noise=noise, **kwargs))
        return augmented[-1]

    monkeypatch.setattr(drq_dqn, "augment", with_dopamine_draws)
    discounts = torch.from_numpy(cumulative_gamma * (1.0 - terminals)).float()
    batch = {"obs": nchw(states), "next_obs": nchw(next_states), "actions": torch.from_numpy(actions).long(),
             "returns": torch.from_numpy(rewards), "discounts": discounts}
    optimizer_t = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    target_network = drq_dqn.make_target_network(q_network, args.target_network_frequency)
    loss, _ = drq_dqn.make_update(args)(q_network, target_network, optimizer_t, batch)  # binds the patched augment

    # the draws were dopamine's: both augmented inputs agree
    assert_close(augmented[0] / 255.0, nchw(aug_next).numpy(), "augmented next states", rtol=1e-6)
    assert_close(augmented[1] / 255.0, nchw(aug_states).numpy(), "augmented states", rtol=1e-6)
    assert loss.item() == pytest.approx(float(mean_loss), rel=1e-5)
    before, grads, after = flax_to_torch(params), flax_to_torch(opt_state[0]), flax_to_torch(new_params)
    for name, parameter in q_network.named_parameters():
        assert_close(parameter.grad, grads[name].numpy(), f"gradient of {name}")
        # a parameter after the step: equal weights plus a step that carries the gradient's rounding
        step = (after[name] - before[name]).abs().max().item()
        error = (parameter.detach() - after[name]).abs().max().item()
        assert error <= 1e-4 * step + 2**-23 * after[name].abs().max().item(), f"{name} after the Adam step"

"""Tests of the autoencoder path: pretrain_autoencoder.py, sac_ae_frozen.py, sac_ae.py and drq_sac.py --encoder-path."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import ae_files  # noqa: E402
import dmc_envs  # noqa: E402
import drq_sac  # noqa: E402
import pretrain_autoencoder as pa  # noqa: E402
import run_utils  # noqa: E402
import sac_ae  # noqa: E402
import sac_ae_frozen  # noqa: E402
import sac_pixels  # noqa: E402
import sac_state  # noqa: E402
from helpers import (assert_same_pretrain_run, assert_same_rl_run, assert_same_state,  # noqa: E402
                     assert_sigterm_exit)


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    """n RGB 84x84 uint8 frames, each a bright square on a dark background at a random place: a tiny dataset
    with structure an autoencoder can learn."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, 3, 84, 84), 20, dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 60, size=2)
        frames[i, :, y: y + 24, x: x + 24] = rng.integers(120, 256, size=(3, 1, 1))
    return frames


# ---- the reconstruction target, decoder, loss ----
def test_reconstruction_target_is_the_hand_computed_5bit_quantisation():
    # hand computation: floor(p / 8) / 32 - 0.5, e.g. 100 -> floor(12.5) = 12 -> 12/32 - 0.5 = -0.125
    pixels = torch.tensor([0, 7, 8, 100, 200, 255], dtype=torch.uint8)
    expected = torch.tensor([-0.5, -0.5, -0.46875, -0.125, 25 / 32 - 0.5, 0.46875])
    assert torch.equal(pa.reconstruction_target(pixels, noise=False), expected)
    # the dequantisation noise is U(0, 1/32): inside [0, 1/32), mean 1/64, variance (1/32)^2 / 12
    many = torch.full((200_000,), 100, dtype=torch.uint8)
    noise = pa.reconstruction_target(many) - pa.reconstruction_target(many, noise=False)
    assert noise.min() >= 0 and noise.max() <= 1 / 32 + 1e-6  # float rounding of x + u - 0.5
    assert abs(noise.mean().item() - 1 / 64) < 2e-4
    assert abs(noise.var().item() - (1 / 32) ** 2 / 12) < 2e-6
    # the grey-level map sends the noiseless target of bin k to its lower edge 8k
    assert torch.equal(pa.target_to_pixels(pa.reconstruction_target(pixels, noise=False)),
                       torch.tensor([0.0, 0.0, 8.0, 96.0, 200.0, 248.0]))


@pytest.mark.parametrize("k", [1, 3])
def test_decoder_shape_and_delta_orthogonal_init(k):
    torch.manual_seed(0)
    dec = pa.Decoder(3 * k, 50)
    assert dec(torch.zeros(2, 50)).shape == (2, 3 * k, 84, 84)
    for layer in dec.deconvs:
        w = layer.weight.detach()
        centre = w[:, :, 1, 1]
        off = w.clone()
        off[:, :, 1, 1] = 0
        assert torch.count_nonzero(off) == 0 and torch.count_nonzero(layer.bias) == 0
        # orthogonal with the ReLU gain sqrt(2): the smaller Gram matrix is 2 * identity
        gram = centre @ centre.T if centre.shape[0] <= centre.shape[1] else centre.T @ centre
        assert torch.allclose(gram, 2 * torch.eye(len(gram)), atol=1e-5)
    fc = dec.fc.weight.detach()  # (32*35*35, 50): orthonormal columns
    assert torch.allclose(fc.T @ fc, torch.eye(50), atol=1e-4)


def test_ae_loss_is_reconstruction_mse_plus_latent_penalty():
    torch.manual_seed(0)
    enc, dec = pa.Encoder((3, 84, 84)), pa.Decoder(3, 50)
    obs = torch.as_tensor(_blobs(4))
    gen = torch.Generator().manual_seed(3)
    loss, rec_loss, h = pa.ae_loss(enc, dec, obs, latent_lambda=0.25, generator=gen)
    # independent computation, term by term, with the same noise draw
    target = torch.floor(obs.float() / 8) / 32 + torch.rand(obs.shape, generator=torch.Generator().manual_seed(3)) / 32 - 0.5
    h2 = enc(obs)
    mse = ((dec(h2) - target) ** 2).mean()
    penalty = torch.stack([0.5 * (row**2).sum() for row in h2]).mean()
    assert torch.allclose(rec_loss, mse, atol=1e-6)
    assert torch.allclose(loss, mse + 0.25 * penalty, atol=1e-6)
    enc_opt, dec_opt = pa.make_ae_optimizers(enc, dec, encoder_lr=1e-3, decoder_lr=1e-3, weight_lambda=1e-7)
    assert dec_opt.param_groups[0]["weight_decay"] == 1e-7 and enc_opt.param_groups[0]["weight_decay"] == 0
    assert {id(p) for p in dec_opt.param_groups[0]["params"]} == {id(p) for p in dec.parameters()}


def test_ae_loss_decreases_on_a_small_fixed_dataset():
    torch.manual_seed(0)
    enc, dec = pa.Encoder((3, 84, 84)), pa.Decoder(3, 50)
    enc.apply(pa.ae_weight_init)
    enc_opt, dec_opt = pa.make_ae_optimizers(enc, dec, encoder_lr=1e-3, decoder_lr=1e-3, weight_lambda=1e-7)
    obs = torch.as_tensor(_blobs(8))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        loss, rec_loss, _ = pa.ae_loss(enc, dec, obs, 1e-6, generator=gen)
        enc_opt.zero_grad()
        dec_opt.zero_grad()
        loss.backward()
        enc_opt.step()
        dec_opt.step()
        losses.append(rec_loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


# ---- the dataset ----
def test_stack_frames_equals_a_frame_stack_replayed_step_by_step():
    rng = np.random.default_rng(0)
    n = 40
    frames = rng.integers(0, 256, size=(n, 3, 84, 84), dtype=np.uint8)
    first = np.zeros(n, dtype=bool)
    first[[0, 5, 6, 20]] = True  # episodes of 5, 1, 14 and 20 frames
    starts = torch.as_tensor(pa.episode_starts(first))
    for k in (1, 3, 4):
        got = pa.stack_frames(torch.as_tensor(frames), starts, torch.arange(n), k)
        # brute force: replay the frames through a deque that is refilled at each episode's first frame
        stack = []
        for i in range(n):
            stack = [frames[i]] * k if first[i] else stack[1:] + [frames[i]]
            assert np.array_equal(got[i].numpy(), np.concatenate(stack)), (k, i)


def test_heldout_split_falls_on_an_episode_boundary():
    first = np.zeros(100, dtype=bool)
    first[[0, 30, 60, 85]] = True
    assert pa.split_heldout(first, 0.1) == 85  # 90 wanted, nearest boundary 85
    assert pa.split_heldout(first, 0.35) == 60
    assert pa.split_heldout(np.eye(1, 50, dtype=bool)[0], 0.2) == 40  # one episode: a frame index


def test_dataset_is_saved_compressed_uint8_and_reloads_exactly(tmp_path):
    frames = _blobs(30)
    first = np.zeros(30, dtype=bool)
    first[[0, 12]] = True
    path = tmp_path / "d.npz"
    ae_files.save_dataset(path, frames, first, env_id="cartpole-swingup", policy="random")
    f2, first2, meta = ae_files.load_dataset(path)
    assert f2.dtype == np.uint8 and np.array_equal(f2, frames) and np.array_equal(first2, first)
    assert meta == {"env_id": "cartpole-swingup", "policy": "random"}
    assert path.stat().st_size < frames.nbytes / 5  # compressed
    with pytest.raises(SystemExit, match="error: "):
        ae_files.load_dataset(tmp_path / "missing.npz")


# ---- textual alignment: the blocks copied from the DMC scripts and between the autoencoder scripts stay identical
def _blocks(script: str) -> dict[str, str]:
    """Top-level functions, classes and assignments of a script, by name, as source text."""
    source = (ROOT / script).read_text()
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = ast.get_source_segment(source, node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = ast.get_source_segment(source, node)
    return names


# block -> (the script that holds the reference, the scripts that must hold it identically)
COPIES = {
    "FEATURE_DIM": ("sac_pixels.py", ["drq_sac.py", "pretrain_autoencoder.py", "sac_ae.py", "sac_ae_frozen.py"]),
    "Encoder": ("sac_pixels.py", ["drq_sac.py", "pretrain_autoencoder.py", "sac_ae.py"]),  # sac_ae_frozen: pretrain's
    **{name: ("sac_pixels.py", ["sac_ae.py", "sac_ae_frozen.py"])
       for name in ["weight_init", "mlp", "Actor", "sample_action", "Critic", "update_critic",
                    "update_actor_and_alpha", "soft_update", "act"]},
    **{name: ("sac_pixels.py", ["sac_ae.py"])
       for name in ["random_shift", "ReplayBuffer", "measure_invariance", "make_env"]},
    "update": ("sac_pixels.py", ["sac_ae_frozen.py"]),  # on latents the SAC step is sac_pixels.py's, unchanged
    "StateEncoder": ("sac_state.py", ["sac_ae_frozen.py"]),
}


@pytest.mark.parametrize("name", sorted(COPIES))
def test_copied_blocks_are_identical(name):
    reference, copies = COPIES[name]
    expected = _blocks(reference)[name]
    drifted = [script for script in copies if _blocks(script).get(name) != expected]
    assert not drifted, f"{name} differs from {reference}'s in {drifted}"


# ---- the encoder checkpoint: bit-for-bit into sac_ae.py and drq_sac.py
def _save_encoder(tmp_path: Path, k: int) -> tuple[Path, dict]:
    torch.manual_seed(k)
    enc, dec = pa.Encoder((3 * k, 84, 84)), pa.Decoder(3 * k)
    enc.apply(pa.ae_weight_init)
    with torch.no_grad():  # make every weight distinctive (the init leaves zeros and identical LayerNorm params)
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / f"encoder{k}.pt"
    ae_files.save_encoder_checkpoint(path, enc, dec, k, "cartpole-swingup", {})
    return path, {key: v.clone() for key, v in enc.state_dict().items()}


@pytest.mark.parametrize("k", [1, 3])
def test_saved_encoder_loads_bit_for_bit_into_sac_ae_sac_pixels_and_drq_sac(tmp_path, k):
    path, state = _save_encoder(tmp_path, k)
    ckpt = ae_files.load_encoder_checkpoint(str(path), pa.Encoder)
    assert_same_state(sac_ae_frozen.frozen_encoder(ckpt["encoder"], k, torch.device("cpu")).state_dict(), state)
    # sac_ae.py starts both encoder heads (and the tied convs) from the checkpoint, after SAC-AE's init
    agent = sac_ae.make_agent((3 * k, 84, 84), 1, torch.device("cpu"), 32, pretrained=ckpt)
    assert_same_state(agent.critic.encoder.state_dict(), state)
    assert_same_state(agent.actor.encoder.state_dict(), state)
    assert_same_state(agent.critic_target.encoder.state_dict(), state)
    # drq_sac.py (and its no-augmentation control sac_pixels.py) --encoder-path: Actor and Critic re-initialise
    # what they hold; the weights must survive that
    n = 2
    for module in (sac_pixels, drq_sac):
        agent = module.make_agent((3 * (n + k - 1), 84, 84), 1, torch.device("cpu"), 32, encoder_path=str(path),
                                  latent_stack=n)
        for net in (agent.actor, agent.critic, agent.critic_target):
            assert_same_state(net.encoder.encoder.state_dict(), state)
    # and its features are the per-step encodings of the stacked frames, concatenated
    frames = torch.as_tensor(_blobs(n + k - 1)).reshape(1, -1, 84, 84)
    reference = pa.Encoder((3 * k, 84, 84))
    reference.load_state_dict(state)
    with torch.no_grad():
        expected = torch.cat([reference(frames[:, 3 * j: 3 * (j + k)]) for j in range(n)], dim=1)
    assert torch.allclose(agent.critic.encoder(frames), expected, atol=1e-6)


def test_bad_encoder_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="^error: --encoder-path .* does not exist"):
        ae_files.load_encoder_checkpoint(str(tmp_path / "missing.pt"), pa.Encoder)
    torch.save({"actor": {}}, tmp_path / "model.pt")
    with pytest.raises(SystemExit, match="^error: --encoder-path .* not an encoder.pt"):
        ae_files.load_encoder_checkpoint(str(tmp_path / "model.pt"), pa.Encoder)
    with pytest.raises(SystemExit, match="^error: --encoder-path .* not an encoder.pt"):
        drq_sac.validate(drq_sac.Args(encoder_path=str(tmp_path / "model.pt"), runs_dir=str(tmp_path)), [])
    with pytest.raises(SystemExit, match="^error: sac_ae_frozen.py needs --encoder-path"):
        sac_ae_frozen.validate(sac_ae_frozen.Args(), [])
    path, _ = _save_encoder(tmp_path, 1)
    with pytest.raises(SystemExit, match="^error: --frames-per-input 3 differs from the encoder checkpoint's 1"):
        sac_ae.validate(sac_ae.Args(encoder_path=str(path), frames_per_input=3), [])
    with pytest.raises(SystemExit, match="^error: --feature-dim 32 differs from the encoder checkpoint's 50"):
        sac_ae.validate(sac_ae.Args(encoder_path=str(path), feature_dim=32), [])


def test_defaults_follow_sac_state_and_sac_ae(tmp_path):
    frozen, state = sac_ae_frozen.Args(), sac_state.Args()
    assert (frozen.batch_size, frozen.buffer_size, frozen.alpha_lr, frozen.latent_stack) == \
        (state.batch_size, state.buffer_size, state.alpha_lr, 8)  # report §2: latents of the last 8 steps
    path, _ = _save_encoder(tmp_path, 1)
    pretrained = sac_ae_frozen.validate(sac_ae_frozen.Args(encoder_path=str(path), runs_dir=str(tmp_path)), [])[0]
    assert pretrained["frames_per_input"] == 1  # the checkpoint's input layout
    joint = sac_ae.validate(sac_ae.Args(runs_dir=str(tmp_path)), [])[0]
    # spec §5 (SAC-AE train.py): batch 128, capacity 1e6, alpha lr 1e-4 with beta1 0.5, frame stack 3, encoder tau 0.05
    assert (joint.batch_size, joint.buffer_size, joint.alpha_lr, joint.alpha_beta, joint.frames_per_input,
            joint.encoder_tau, joint.tau) == (128, 1_000_000, 1e-4, 0.5, 3, 0.05, 0.01)
    agent = sac_ae.make_agent((9, 84, 84), 1, torch.device("cpu"), 32, alpha_lr=1e-4, alpha_beta=0.5)
    assert agent.alpha_optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    assert agent.decoder_optimizer.param_groups[0]["weight_decay"] == 1e-7
    conv = agent.critic.encoder.convs[2].weight.detach()  # SAC-AE's delta-orthogonal init, not DrQ's orthogonal
    assert torch.count_nonzero(conv[:, :, 0, 0]) == 0 and torch.count_nonzero(conv[:, :, 1, 1]) > 0


# ---- sac_ae_frozen.py versus sac_ae.py: who moves the encoder
def _latent_env(k: int = 1, n: int = 3, episode_length: int = 24, seed: int = 0):
    """A real cartpole env (action repeat 8, episodes of 3 agent steps) behind LatentStackEnv, recording the pixel
    observations the encoder saw."""
    torch.manual_seed(0)
    encoder = pa.Encoder((3 * k, 84, 84)).requires_grad_(False)
    inner = dmc_envs.make_env("cartpole-swingup", seed, 8, pixels=True, frame_stack=k, episode_length=episode_length)
    env = sac_ae_frozen.LatentStackEnv(inner, encoder, n, k, torch.device("cpu"))
    seen = []
    encode = env.encode
    env.encode = lambda pixels: (seen.append(pixels.copy()), encode(pixels))[1]
    return env, encoder, seen


@pytest.mark.parametrize("k", [1, 3])
def test_latent_stack_is_the_last_n_encodings_restarted_at_episode_boundaries(k):
    n = 3
    env, encoder, seen = _latent_env(k=k, n=n)
    obs_list, first = [], []
    obs, _ = env.reset(seed=0)
    obs_list.append(obs), first.append(True)
    for _ in range(8):  # crosses two episode boundaries (episodes of 3 agent steps)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        obs_list.append(obs), first.append(False)
        if terminated or truncated:
            obs, _ = env.reset()
            obs_list.append(obs), first.append(True)
    assert sum(first) >= 3
    with torch.no_grad():  # brute force: encode every frame seen, then stack by hand with the reset rule
        latents = [encoder(torch.as_tensor(p[-3 * k:]).unsqueeze(0))[0].numpy() for p in seen]
    start = 0
    for t, obs in enumerate(obs_list):
        start = t if first[t] else start
        expected = np.concatenate([latents[max(t - j, start)] for j in range(n - 1, -1, -1)])
        np.testing.assert_array_equal(obs, expected)
    assert env.observation_space.shape == (n * 50,)


def test_frozen_update_changes_no_encoder_weight_but_trains_the_critic():
    env, encoder, _ = _latent_env()
    before = {key: v.clone() for key, v in encoder.state_dict().items()}
    agent = sac_ae_frozen.make_agent(env.observation_space.shape, 1, torch.device("cpu"), 32)
    rb = sac_ae_frozen.ReplayBuffer(100, env.observation_space.shape, 1, torch.device("cpu"), episode_len=3)
    obs, _ = env.reset(seed=0)
    stored = []
    for _ in range(12):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(obs, action, reward, next_obs, not_done=1.0, done=terminated or truncated)
        stored.append((obs, next_obs))
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    # the buffer stores each step's latent once and rebuilds the stacks exactly
    got_obs, _, _, got_next, _ = rb.get(torch.arange(12))
    np.testing.assert_array_equal(got_obs.numpy(), np.stack([o for o, _ in stored]))
    np.testing.assert_array_equal(got_next.numpy(), np.stack([o for _, o in stored]))
    q_before = agent.critic.q1[0].weight.detach().clone()
    for step in range(4):
        sac_ae_frozen.update(agent, rb, step, batch_size=4)
    assert_same_state(encoder.state_dict(), before)
    assert not torch.equal(agent.critic.q1[0].weight, q_before)
    encoder_params = {id(p) for p in encoder.parameters()}
    for opt in (agent.actor_optimizer, agent.critic_optimizer, agent.alpha_optimizer):
        assert not encoder_params & {id(p) for group in opt.param_groups for p in group["params"]}


def test_drq_with_pretrained_encoder_changes_no_encoder_weight(tmp_path):
    path, state = _save_encoder(tmp_path, 1)
    n = 2
    obs_shape = (3 * n, 84, 84)
    agent = drq_sac.make_agent(obs_shape, 1, torch.device("cpu"), 32, encoder_path=str(path), latent_stack=n)
    rb = drq_sac.ReplayBuffer(50, obs_shape, 1, torch.device("cpu"), episode_len=50)
    frames = _blobs(12)
    for i in range(10):
        rb.add(frames[i: i + n].reshape(-1, 84, 84), np.zeros(1), 1.0, frames[i + 1: i + n + 1].reshape(-1, 84, 84),
               1.0, False)
    q_before = agent.critic.q1[0].weight.detach().clone()
    for step in range(4):
        drq_sac.update(agent, rb, step, batch_size=4)
    for net in (agent.actor, agent.critic, agent.critic_target):
        assert_same_state(net.encoder.encoder.state_dict(), state)
    assert not torch.equal(agent.critic.q1[0].weight, q_before)


def test_sac_ae_critic_and_reconstruction_losses_both_move_the_encoder():
    torch.manual_seed(0)
    agent = sac_ae.make_agent((9, 84, 84), 1, torch.device("cpu"), 32)
    obs = torch.as_tensor(_blobs(6)).reshape(2, 9, 84, 84)
    action, reward, not_done = torch.zeros(2, 1), torch.ones(2, 1), torch.ones(2, 1)

    def snapshot():
        return {key: v.detach().clone() for key, v in agent.critic.encoder.state_dict().items()}

    s0 = snapshot()
    sac_ae.update_critic(agent, obs, action, reward, obs, not_done, 0.99)
    s1 = snapshot()
    assert not torch.equal(s1["convs.0.weight"], s0["convs.0.weight"]), "the critic loss must train the convs"
    metrics = pa.update_autoencoder(agent.critic.encoder, agent.decoder, agent.encoder_optimizer,
                                    agent.decoder_optimizer, obs, 1e-6)
    s2 = snapshot()
    assert not torch.equal(s2["convs.0.weight"], s1["convs.0.weight"]), "the reconstruction loss must train the convs"
    assert not torch.equal(s2["head.0.weight"], s1["head.0.weight"]), "...and the head"
    assert metrics["losses/reconstruction_mse"] > 0
    # the actor's convs are the critic's (tied), its head is not touched by either loss
    assert agent.actor.encoder.convs is agent.critic.encoder.convs
    # SAC-AE's target update (spec §5): Q heads with tau, the encoder with encoder_tau, by hand
    target_q = agent.critic_target.q1[0].weight.detach().clone()
    rb = sac_ae.ReplayBuffer(20, (9, 84, 84), 1, torch.device("cpu"), episode_len=20)
    frames = _blobs(8)
    for i in range(5):
        rb.add(frames[i: i + 3].reshape(9, 84, 84), np.zeros(1), 0.0, frames[i + 1: i + 4].reshape(9, 84, 84), 1.0,
               False)
    old_conv = agent.critic.encoder.convs[0].weight.detach().clone()
    sac_ae.update(agent, rb, step=1, batch_size=2, tau=0.01, encoder_tau=0.05)  # odd step: no target update
    assert torch.equal(agent.critic_target.q1[0].weight, target_q)
    assert not torch.equal(agent.critic.encoder.convs[0].weight, old_conv)
    target_before = {k: v.detach().clone() for k, v in agent.critic_target.state_dict().items()}
    # an even step updates the critic first, then soft-updates; recompute with the critic after its update
    sac_ae.update(agent, rb, step=2, batch_size=2, tau=0.01, encoder_tau=0.05, policy_frequency=1000,
                  decoder_frequency=1000)
    critic_after = agent.critic.state_dict()
    for key, value in agent.critic_target.state_dict().items():
        if "num_batches" in key:
            continue
        tau = 0.05 if key.startswith("encoder.") else 0.01
        expected = target_before[key] + tau * (critic_after[key] - target_before[key])
        assert torch.allclose(value, expected, atol=1e-6), key


# ---- collecting with a saved actor (the coverage hypothesis)
@pytest.mark.parametrize("module", [sac_state, drq_sac])
def test_policy_checkpoint_loads_the_saved_actor_and_collects_with_it(module, tmp_path):
    torch.manual_seed(0)
    obs_shape = (5,) if module is sac_state else (9, 84, 84)
    agent = module.make_agent(obs_shape, 1, torch.device("cpu"), 32)
    args = module.Args(hidden_dim=32, episode_length=40)
    # what --save-model writes: the run's flags (action repeat unresolved, None) and the agent state
    run_utils.save_checkpoint(tmp_path / "model.pt", module.SCRIPT,
                              {"args": vars(args), "run_name": "test", "agent": run_utils.parts_state(agent)})
    policy_module, actor, saved, pixels = ae_files.load_policy(str(tmp_path / "model.pt"), torch.device("cpu"))
    assert policy_module is module and pixels == (module is drq_sac) and saved["action_repeat"] == 8
    obs = torch.rand(3, *obs_shape) * (255 if pixels else 1)
    with torch.no_grad():  # the same actor: identical outputs
        for a, b in zip(actor(obs), agent.actor(obs)):
            assert torch.equal(a, b)
    # the collection steps a real env with the actor's sampled actions and stores the agent's 84x84 view
    def policy(obs):
        return module.act(actor, obs, torch.device("cpu"), sample=True)

    frames, first = pa.collect_frames("cartpole-swingup", 12, 0, 8, 40, policy, pixels)
    assert frames.shape == (12, 3, 84, 84) and first.tolist() == ([True] + [False] * 4) * 2 + [True, False]
    env = dmc_envs.make_env("cartpole-swingup", 0, 8, pixels=True, episode_length=40)
    np.testing.assert_array_equal(frames[0], env.reset(seed=0)[0][-3:])  # same seed, same first frame
    with pytest.raises(SystemExit, match="^error: --policy-checkpoint .* not a model.pt"):
        ae_files.load_policy(str(tmp_path / "missing.pt"), torch.device("cpu"))
    run_utils.save_checkpoint(tmp_path / "other.pt", "sac_ae",
                              {"args": vars(args), "agent": run_utils.parts_state(agent)})
    with pytest.raises(SystemExit, match="^error: --policy-checkpoint .* is a checkpoint of sac_ae.py"):
        ae_files.load_policy(str(tmp_path / "other.pt"), torch.device("cpu"))


# ---- smoke: the real scripts on a real env, a tiny dataset and a few hundred env steps
def _start(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # runs go side by side on 2 cores
    return subprocess.Popen([sys.executable, str(ROOT / script), "--no-cuda", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def _finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return stdout


def _run(script: str, *args: str) -> str:
    return _finish(_start(script, *args))


def _single_run_dir(runs: Path, algo: str) -> Path:
    (run,) = [d for d in runs.iterdir() if f"__{algo}__" in d.name]
    return run


RL_TINY = ["--total-timesteps", "240", "--learning-starts", "160", "--episode-length", "80", "--batch-size", "8",
           "--buffer-size", "500", "--eval-episodes", "1", "--eval-frequency", "240", "--hidden-dim", "32",
           "--save-model"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Collect a tiny random-policy dataset and train one epoch (1 frame per input), then reuse the dataset for a
    3-frame autoencoder: both real pretrain_autoencoder.py runs."""
    root = tmp_path_factory.mktemp("ae")
    common = ["--episode-length", "80", "--batch-size", "8", "--eval-frames", "8", "--png-frames", "2",
              "--dataset-dir", str(root / "ds")]
    out1 = _run("pretrain_autoencoder.py", "--num-frames", "40", "--epochs", "1", "--runs-dir", str(root / "r1"),
                *common)
    (dataset,) = (root / "ds").iterdir()
    out3 = _run("pretrain_autoencoder.py", "--dataset", str(dataset), "--frames-per-input", "3", "--epochs", "2",
                "--runs-dir", str(root / "r3"), *common)
    run1, run3 = (_single_run_dir(root / r, "pretrain_autoencoder") for r in ("r1", "r3"))
    return {"root": root, "dataset": dataset, "out1": out1, "out3": out3, "run1": run1, "run3": run3}


def test_smoke_pretrain_writes_dataset_encoder_figures_and_metrics(encoders):
    frames, first, meta = ae_files.load_dataset(encoders["dataset"])
    assert frames.shape == (40, 3, 84, 84) and frames.dtype == np.uint8
    assert first[0] and first.sum() == 4  # episodes of 80 env steps / action repeat 8 = 10 agent steps
    assert meta["policy"] == "random" and meta["action_repeat"] == 8
    assert "<-" in encoders["out3"] and "collecting" not in encoders["out3"]  # the dataset was reused
    for run, k, epochs in ((encoders["run1"], 1, 1), (encoders["run3"], 3, 2)):
        for name in ("encoder.pt", "reconstructions.png", "loss_curves.png", "args.json"):
            assert (run / name).stat().st_size > 0, name
        final = json.loads((run / "final.json").read_text())
        assert final["frames_per_input"] == k and final["epochs"] == epochs
        assert final["train_frames"] == 30 and final["heldout_frames"] == 10  # the episode boundary at 30
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["ae/epoch"] for x in lines] == list(range(1, epochs + 1))
        for key in ("ae/train_mse", "ae/heldout_mse", "ae/train_mse_255", "ae/heldout_mse_255"):
            assert all(0 < x[key] < (1.0 if "255" not in key else 65025) for x in lines), key
        ckpt = torch.load(run / "encoder.pt", weights_only=True)
        assert ckpt["frames_per_input"] == k and ckpt["encoder"]["convs.0.weight"].shape[1] == 3 * k


def test_smoke_sac_ae_frozen_and_sac_ae_and_drq_with_pretrained_encoder(encoders, tmp_path):
    enc1, enc3 = encoders["run1"] / "encoder.pt", encoders["run3"] / "encoder.pt"
    runs = tmp_path / "runs"
    procs = [_start("sac_ae_frozen.py", "--encoder-path", str(enc1), "--runs-dir", str(runs), "--exp-name", "frozen",
                    *RL_TINY),
             _start("sac_ae.py", "--encoder-path", str(enc3), "--runs-dir", str(runs), "--exp-name", "joint",
                    *RL_TINY),
             _start("drq_sac.py", "--encoder-path", str(enc1), "--latent-stack", "3", "--runs-dir", str(runs),
                    "--exp-name", "drq_ae", *RL_TINY)]
    for proc in procs:
        _finish(proc)
    for algo, extra in (("frozen", {"losses/critic_loss"}), ("joint", {"losses/critic_loss", "losses/ae_loss"}),
                        ("drq_ae", {"losses/critic_loss"})):
        run = _single_run_dir(runs, algo)
        final = json.loads((run / "final.json").read_text())
        assert final["total_timesteps"] == 240 and final["action_repeat"] == 8 and len(final["returns"]) == 1
        keys = set().union(*[json.loads(x).keys() for x in (run / "metrics.jsonl").read_text().splitlines()])
        assert extra | {"eval/episodic_return", "charts/episodic_return"} <= keys, (algo, keys)
        saved = json.loads((run / "args.json").read_text())
        assert saved["encoder_path"] == str(enc1 if algo != "joint" else enc3)
    args = json.loads((_single_run_dir(runs, "frozen") / "args.json").read_text())
    assert (args["latent_stack"], args["frames_per_input"], args["batch_size"]) == (8, 1, 8)
    # the saved frozen model evaluates without its encoder file (the weights travel in model.pt)
    out = _run("sac_ae_frozen.py", "--eval-checkpoint", str(_single_run_dir(runs, "frozen") / "model.pt"),
               "--eval-episodes", "1", "--runs-dir", str(tmp_path / "eval"))
    assert "mean return" in out


def test_smoke_eval_encoder_measures_a_trained_autoencoder_on_other_frames(encoders, tmp_path):
    _run("pretrain_autoencoder.py", "--eval-encoder", str(encoders["run1"] / "encoder.pt"), "--dataset",
         str(encoders["dataset"]), "--png-frames", "2", "--runs-dir", str(tmp_path))
    final = json.loads((_single_run_dir(tmp_path, "pretrain_autoencoder") / "final.json").read_text())
    # independent: the same checkpoint evaluated in-process over all 40 frames
    ckpt = torch.load(encoders["run1"] / "encoder.pt", weights_only=True)
    enc, dec = pa.Encoder((3, 84, 84)), pa.Decoder(3)
    enc.load_state_dict(ckpt["encoder"])
    dec.load_state_dict(ckpt["decoder"])
    frames = torch.as_tensor(ae_files.load_dataset(encoders["dataset"])[0])
    with torch.no_grad():
        pixels = pa.target_to_pixels(dec(enc(frames)))
    assert final["epochs"] == 0 and final["num_frames"] == 40
    assert final["eval_mse_255"] == pytest.approx(((pixels - frames.float()) ** 2).mean().item(), rel=1e-4)


def test_pretrain_bad_input_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "pretrain_autoencoder.py"), "--dataset",
                          str(tmp_path / "missing.npz"), "--runs-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1].startswith("error: --dataset")


# ---- interrupts at chosen points: SIGTERM from inside the n-th call of a function, then --resume; the result is
# bitwise the uninterrupted run (tests/test_resume.py interrupts from outside, near the middle of a run)
SIGTERM_AT_CALL = """
import os, signal, sys
sys.argv[0] = {script!r}
import {module} as m
owner = {owner}
original, calls = getattr(owner, {name!r}), [0]
def counted(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {n}:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)
setattr(owner, {name!r}, counted)
m.main(m.parse_args(sys.argv[1:]), sys.argv[1:])
"""


def _sigterm_at_call(script: str, owner: str, name: str, n: int, *args: str) -> Path:
    """Run `script` with its command line, SIGTERM it from inside the n-th call of `owner.name` (owner: `m`, the
    script's module, or a class of it), check the one-line exit, and return the run directory it left."""
    code = SIGTERM_AT_CALL.format(script=str(ROOT / script), module=Path(script).stem, owner=owner, name=name, n=n)
    proc = subprocess.run([sys.executable, "-c", code, "--no-cuda", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return assert_sigterm_exit(proc.returncode, proc.stdout, proc.stderr)


def test_sac_ae_interrupted_inside_its_first_burst_of_updates_resumes_bitwise(tmp_path):
    # learning starts after 20 agent steps with SAC-AE's 20 updates at once; the 5th sends SIGTERM, so the checkpoint
    # holds the step's action and 5 updates done
    flags = RL_TINY
    _run("sac_ae.py", *flags, "--runs-dir", str(tmp_path / "straight"))
    run = _sigterm_at_call("sac_ae.py", "m", "update", 5, *flags, "--runs-dir", str(tmp_path / "cut"))
    loop = torch.load(run / "checkpoint.pt", weights_only=True)["loop"]
    assert loop["burst"]["done"] == 5 and loop["global_step"] == 160 and not loop["updated"]
    _run("sac_ae.py", "--resume", str(run))
    assert_same_rl_run(_single_run_dir(tmp_path / "straight", "sac_ae"), run)


def test_sac_ae_frozen_resumes_bitwise_without_its_encoder_file(encoders, tmp_path):
    encoder = tmp_path / "encoder.pt"
    encoder.write_bytes((encoders["run1"] / "encoder.pt").read_bytes())
    flags = ["--encoder-path", str(encoder), *RL_TINY]
    _run("sac_ae_frozen.py", *flags, "--runs-dir", str(tmp_path / "straight"))
    run = _sigterm_at_call("sac_ae_frozen.py", "m", "update", 7, *flags, "--runs-dir", str(tmp_path / "cut"))
    encoder.unlink()  # the checkpoint carries the frozen encoder, so the run continues with the very same one
    _run("sac_ae_frozen.py", "--resume", str(run))
    assert_same_rl_run(_single_run_dir(tmp_path / "straight", "sac_ae_frozen"), run)


def test_pretrain_interrupted_while_collecting_and_inside_an_epoch_resumes_bitwise(encoders, tmp_path):
    # encoders' first run is the uninterrupted one: the same flags, never stopped
    flags = ["--num-frames", "40", "--epochs", "1", "--episode-length", "80", "--batch-size", "8", "--eval-frames", "8",
             "--png-frames", "2", "--dataset-dir", str(tmp_path / "ds"), "--runs-dir", str(tmp_path / "runs")]
    run = _sigterm_at_call("pretrain_autoencoder.py", "m.dmc_envs.DMCEnv", "step", 23, *flags)  # mid-episode, frame 23
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["phase"] == "collect" and ckpt["collect"]["frames_done"] == 23
    # the resumed run collects the rest, then stops in the middle of the epoch's 3 minibatches
    assert _sigterm_at_call("pretrain_autoencoder.py", "m", "ae_loss", 2, "--resume", str(run)) == run
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["phase"] == "train" and ckpt["train"]["update"] == 2
    out = _run("pretrain_autoencoder.py", "--resume", str(run))
    assert "collecting" not in out
    (dataset,) = (tmp_path / "ds").iterdir()
    (frames, first, meta), (frames0, first0, meta0) = ae_files.load_dataset(dataset), ae_files.load_dataset(encoders["dataset"])
    assert np.array_equal(frames, frames0) and np.array_equal(first, first0) and meta == meta0
    assert_same_pretrain_run(encoders["run1"], run)

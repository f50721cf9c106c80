"""Pretrain the SAC-AE convolutional autoencoder on frames of a DeepMind Control task: the reproduction report's
setup (its §2: 200k frames of a random policy, 300 epochs, 50-dim features) for sac_ae_frozen.py, sac_ae.py and
drq_sac.py --encoder-path.

The encoder is the DMC scripts' `Encoder` (the same class, so its weights load bit-for-bit), the decoder SAC-AE's
(spec/ALGORITHMS.md §5, cited as "spec §x"); this file's decoder, init, optimizers and update are also sac_ae.py's
autoencoder, written once here. One update on a minibatch x of frame stacks, h = encoder(x):

    loss = MSE(decoder(h), 5-bit target of x) + lambda_z * mean(0.5 ||h||^2),  Adam; the decoder's Adam has weight
    decay lambda_theta

Frames come from uniform random actions (the report) or a saved actor (--policy-checkpoint), stored once as
compressed uint8 and reusable (--dataset). Outputs in {runs_dir}/{run_name}/: encoder.pt, reconstructions.png,
loss_curves.png, metrics.jsonl (train and held-out reconstruction MSE per epoch, global_step = epoch), final.json.

    python pretrain_autoencoder.py                                           # the report: cartpole, random policy
    python pretrain_autoencoder.py --frames-per-input 3                      # SAC-AE/DrQ input: 3 stacked frames
    python pretrain_autoencoder.py --policy-checkpoint runs/<run>/model.pt   # frames of a trained policy
    python pretrain_autoencoder.py --dataset datasets/<file>.npz --epochs 50 # reuse collected frames
    python pretrain_autoencoder.py --eval-encoder runs_ae/<run>/encoder.pt --dataset datasets/<file>.npz
    python pretrain_autoencoder.py --resume runs_ae/<run>                    # continue an interrupted run
"""
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import ae_files
import dmc_envs
import run_utils

SCRIPT = Path(__file__).stem


@dataclass
class Args(run_utils.RunArgs):
    exp_name: str = SCRIPT
    """the name of this experiment (used in run_name and as `algo` in final.json)"""
    seed: int = 1
    """seed of the experiment (collection, split, initialisation, minibatch order)"""
    runs_dir: str = "runs_ae"
    """folder that receives {runs_dir}/{run_name}/ (kept apart from the RL runs that report.py reads)"""
    checkpoint_interval: int = 2_000
    """minibatch updates between checkpoints (also one as training starts); SIGINT/SIGTERM write one in either phase"""

    # Data (report §2; spec §1.4 for the environment)
    env_id: str = "cartpole-swingup"
    """dm_control task (the report's SAC experiments are on cartpole swingup, its Figure 1)"""
    action_repeat: int | None = None
    """action repeat while collecting; default: the policy checkpoint's, else the task's (spec §1.4)"""
    episode_length: int = 1000
    """env steps before the time limit ends an episode (the DMC limit; shorten only for smoke tests)"""
    num_frames: int = 200_000
    """frames (agent steps) to collect (report §2: 200k)"""
    policy_checkpoint: str | None = None
    """model.pt of sac_state.py/sac_pixels.py/drq_sac.py whose sampled actions collect; default: random (report)"""
    dataset: str | None = None
    """reuse a dataset .npz written by an earlier run instead of collecting (its frames, whatever --num-frames says)"""
    dataset_dir: str = "datasets"
    """folder a newly collected dataset is written to"""

    # Autoencoder (spec §5)
    frames_per_input: Literal[1, 3] = 1
    """frames per encoder input: 1 = the report (latents stacked later), 3 = SAC-AE's and DrQ's frame stack"""
    epochs: int = 300
    """passes over the training split (report §2: 300)"""
    batch_size: int = 128
    """minibatch size (SAC-AE's batch, spec §5; the report gives none)"""
    encoder_lr: float = 1e-3
    """Adam learning rate of the encoder (SAC-AE encoder_lr, spec §5)"""
    decoder_lr: float = 1e-3
    """Adam learning rate of the decoder (SAC-AE decoder_lr, spec §5)"""
    decoder_latent_lambda: float = 1e-6
    """weight of the L2 penalty on the latent (SAC-AE decoder_latent_lambda, spec §5)"""
    decoder_weight_lambda: float = 1e-7
    """Adam weight decay of the decoder only (SAC-AE decoder_weight_lambda, spec §5)"""
    heldout_fraction: float = 0.1
    """share of the frames held out (the last whole episodes) for the held-out MSE"""
    eval_frames: int = 10_000
    """the per-epoch MSE is measured on at most this many held-out inputs and as many training inputs"""
    png_frames: int = 8
    """held-out inputs shown in reconstructions.png"""
    eval_encoder: str | None = None
    """encoder.pt of an earlier run to evaluate on all frames of the data instead of training one (coverage)"""


# -- Networks: the DMC scripts' encoder (spec §1.1) and the SAC-AE decoder (spec §5) ----------------------------


FEATURE_DIM = 50  # spec §1.1 feature_dim


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


def ae_weight_init(m: nn.Module) -> None:
    """SAC-AE's init (spec §5): Linear orthogonal, bias 0; conv and deconv delta-orthogonal, i.e. all taps zero
    except the centre one, which gets an orthogonal matrix with the ReLU gain (arXiv 1806.05393)."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        m.weight.data.fill_(0.0)
        m.bias.data.fill_(0.0)
        mid = m.weight.size(2) // 2
        nn.init.orthogonal_(m.weight.data[:, :, mid, mid], nn.init.calculate_gain("relu"))


class Decoder(nn.Module):
    """SAC-AE decoder (spec §5): fc 50 -> 32x35x35 + ReLU, three 3x3 stride-1 deconvs + ReLU (35 -> 41), then a
    3x3 stride-2 deconv with output_padding 1 (41 -> 84) to the input's channels, no output activation. Its
    output lives on the scale of `reconstruction_target`, about [-0.5, 0.5]."""

    def __init__(self, out_channels: int, feature_dim: int = FEATURE_DIM, num_filters: int = 32):
        super().__init__()
        self.num_filters = num_filters
        self.fc = nn.Linear(feature_dim, num_filters * 35 * 35)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(num_filters, num_filters, 3, stride=1) for _ in range(3)])
        self.deconvs.append(nn.ConvTranspose2d(num_filters, out_channels, 3, stride=2, output_padding=1))
        self.apply(ae_weight_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(h)).view(-1, self.num_filters, 35, 35)
        for deconv in self.deconvs[:-1]:
            x = torch.relu(deconv(x))
        return self.deconvs[-1](x)


# -- The dataset (this script's replay): frames stored once, stacked on demand ----------------------------------


def episode_starts(first: np.ndarray) -> np.ndarray:
    """Index of each frame's episode's first frame, from a dataset's `first` flags."""
    return np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))


def stack_frames(frames: torch.Tensor, starts: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
    """Encoder inputs for dataset indices `idx`: the last `k` frames up to each index, oldest first, along the
    channels; where the episode is younger than k its first frame is repeated (the frame stack's reset rule,
    spec §1.4). frames (N, 3, H, W) uint8 stored once; starts (N,) from `episode_starts`."""
    offsets = torch.arange(k - 1, -1, -1, device=idx.device)
    src = torch.maximum(idx[:, None] - offsets[None, :], starts[idx][:, None])
    return frames[src.reshape(-1)].reshape(len(idx), k * frames.shape[1], *frames.shape[2:])


def split_heldout(first: np.ndarray, fraction: float) -> int:
    """Index splitting a dataset into train [0, cut) and held-out [cut, N): the episode boundary nearest to a
    held-out share of `fraction`, so that no episode straddles the split (neighbouring frames of one episode are
    near-duplicates); a frame index when the data holds a single episode."""
    n = len(first)
    goal = int(round(n * (1 - fraction)))
    bounds = np.flatnonzero(first[1:]) + 1
    cut = int(bounds[np.argmin(np.abs(bounds - goal))]) if len(bounds) else goal
    return min(max(cut, 1), n - 1)


# -- The SAC-AE update (spec §5): 5-bit reconstruction target, loss, optimizers, one step (sac_ae.py's too)

RECONSTRUCTION_BITS = 5  # spec §5: utils.preprocess_obs(bits=5), after Glow (arXiv 1807.03039)


def reconstruction_target(obs: torch.Tensor, bits: int = RECONSTRUCTION_BITS, noise: bool = True,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """SAC-AE's reconstruction target (spec §5, utils.preprocess_obs): reduce uint8 pixels to `bits` bits,
    scale to [0, 1), add uniform dequantisation noise U(0, 1/2^bits), centre on 0. Only the target is quantised:
    the encoder still sees obs / 255."""
    bins = 2**bits
    x = torch.floor(obs.float() / 2 ** (8 - bits)) / bins
    if noise:
        x = x + torch.rand(x.shape, device=x.device, generator=generator) / bins
    return x - 0.5


def ae_loss(encoder: nn.Module, decoder: nn.Module, obs: torch.Tensor, latent_lambda: float,
            generator: torch.Generator | None = None):
    """SAC-AE's update_decoder loss (spec §5): MSE(decoder(h), 5-bit target) + lambda_z * mean(0.5 ||h||^2), the
    latent L2 penalty of RAE (arXiv 1903.12436). The decoder's weight decay lives in its optimizer (Adam
    weight_decay, as in SAC-AE). Returns (loss, reconstruction MSE, h)."""
    h = encoder(obs)
    rec_loss = F.mse_loss(decoder(h), reconstruction_target(obs, generator=generator))
    latent_loss = (0.5 * h.pow(2).sum(1)).mean()
    return rec_loss + latent_lambda * latent_loss, rec_loss, h


def make_ae_optimizers(encoder: nn.Module, decoder: nn.Module, encoder_lr: float = 1e-3, decoder_lr: float = 1e-3,
                       weight_lambda: float = 1e-7) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """SAC-AE (spec §5): Adam on the encoder; Adam with weight decay lambda_theta on the decoder only."""
    return (torch.optim.Adam(encoder.parameters(), lr=encoder_lr),
            torch.optim.Adam(decoder.parameters(), lr=decoder_lr, weight_decay=weight_lambda))


def update_autoencoder(encoder: nn.Module, decoder: nn.Module, encoder_optimizer: torch.optim.Optimizer,
                       decoder_optimizer: torch.optim.Optimizer, obs: torch.Tensor, latent_lambda: float) -> dict:
    """One step of SAC-AE's update_decoder (spec §5): the reconstruction loss trains the encoder, head included,
    and the decoder, each with its own optimizer. Returns tensors (no host sync)."""
    loss, rec_loss, _ = ae_loss(encoder, decoder, obs, latent_lambda)
    encoder_optimizer.zero_grad(set_to_none=True)
    decoder_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    encoder_optimizer.step()
    decoder_optimizer.step()
    return {"losses/ae_loss": loss.detach(), "losses/reconstruction_mse": rec_loss.detach()}


# -- Evaluation: reconstruction MSE on two scales, the reconstructions the figures show -------------------------


def target_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """`reconstruction_target`'s scale mapped back to grey levels 0..255 (5-bit bin k covers [8k, 8k + 8)), so
    reconstruction errors can be reported in grey levels."""
    return (x + 0.5) * 256.0


@torch.no_grad()
def evaluate_mse(encoder: nn.Module, decoder: nn.Module, frames: torch.Tensor, starts: torch.Tensor, idx: torch.Tensor,
                 k: int, seed: int, batch_size: int = 256, label: str | None = None) -> tuple[float, float]:
    """Reconstruction MSE (per pixel and channel) over the inputs at `idx`, on two scales: the training target's
    (5-bit, dequantisation noise, [-0.5, 0.5]: the loss SAC-AE minimises) and grey levels 0..255 (the output mapped
    back by `target_to_pixels`, against the original uint8 frames). The noise has a fixed seed so that epochs are
    compared on one draw. With a `label`, a line every ~20 s says how far it got (minutes on a CPU)."""
    gen = torch.Generator(device=frames.device).manual_seed(seed)
    sq_target = torch.zeros((), device=frames.device, dtype=torch.float64)
    sq_pixels = torch.zeros((), device=frames.device, dtype=torch.float64)
    last_line = time.time()
    for i in range(0, len(idx), batch_size):
        if label is not None and time.time() - last_line >= 20.0:
            print(f"{label}: {i}/{len(idx)} inputs", flush=True)
            last_line = time.time()
        obs = stack_frames(frames, starts, idx[i: i + batch_size], k)
        rec = decoder(encoder(obs))
        sq_target += (rec - reconstruction_target(obs, generator=gen)).pow(2).sum()
        sq_pixels += (target_to_pixels(rec) - obs.float()).pow(2).sum()
    count = len(idx) * k * frames[0].numel()
    return sq_target.item() / count, sq_pixels.item() / count


@torch.no_grad()
def reconstruct(encoder: nn.Module, decoder: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The autoencoder's output for `obs` in grey levels, uint8, as the figures show it."""
    return target_to_pixels(decoder(encoder(obs))).clamp(0, 255).round().to(torch.uint8)


# -- Environment: collecting frames with random actions or a saved policy ---------------------------------------


def collect_frames(env_id: str, num_frames: int, seed: int, action_repeat: int, episode_length: int,
                   policy: Callable[[np.ndarray], np.ndarray] | None, pixels: bool, resume: dict | None = None,
                   interrupts: run_utils.Interrupts | None = None,
                   on_interrupt: Callable[[dict], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The agent's 84x84 RGB view at each of `num_frames` agent steps, (N, 3, 84, 84) uint8, and `first` (N,),
    True at each episode's first frame. Actions: uniform in [-1, 1] without a policy, else the policy's samples
    (as during its training). A state policy acts on states while the same camera renders the frames. When
    `interrupts` holds a signal, `on_interrupt` gets the collection so far (it writes a checkpoint and exits);
    `resume` continues from such a state (the global RNG restored by the caller)."""
    env = dmc_envs.make_env(env_id, seed, action_repeat, pixels=pixels or policy is None, episode_length=episode_length)
    frames = np.empty((num_frames, 3, env.image_size, env.image_size), dtype=np.uint8)
    first = np.zeros(num_frames, dtype=bool)
    if resume is None:
        start, new_episode = 0, True
        obs, _ = env.reset(seed=seed)
    else:
        start, new_episode = resume["frames_done"], resume["new_episode"]
        frames[:start], first[:start] = resume["frames"].numpy(), resume["first"].numpy()
        obs = env.restore(resume["env"])
    progress = run_utils.Progress(num_frames, 0, start)
    for i in range(start, num_frames):
        if interrupts is not None and interrupts.requested:
            on_interrupt({"frames_done": i, "frames": frames[:i], "first": first[:i], "new_episode": new_episode,
                          "env": env.snapshot()})
        if progress.due():
            print("collecting: " + ae_files.progress_line(progress, i), flush=True)
        frames[i] = obs[-3:] if env.pixels else env.render_frame()
        first[i] = new_episode
        action = env.action_space.sample() if policy is None else policy(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        new_episode = terminated or truncated
        if new_episode:
            obs, _ = env.reset()
    env.close()
    return frames, first


# -- Main: collect (or load) frames, then train the autoencoder by epochs of shuffled minibatches ---------------


def main(args: Args, argv: list[str] = ()) -> dict:
    """Collect (or load) frames, train the autoencoder, write the encoder checkpoint and figures; returns final."""
    t_start = time.time()
    ckpt = run_utils.resume(args, argv, SCRIPT, vars(Args()))
    cfg = validate(args, argv, ckpt)
    env_name, action_repeat, device = cfg["env_name"], cfg["action_repeat"], cfg["device"]
    path = Path(cfg["dataset_path"])
    run_utils.seed_everything(args.seed, args.torch_deterministic)
    run = ae_files.PretrainRun(args, SCRIPT, cfg, ckpt, t_start)

    if cfg["dataset"] is not None:
        print(f"dataset: loading {len(cfg['dataset'][1])} frames from {path} ...", flush=True)
        frames, first, meta = ae_files.load_dataset(path)
        print(f"dataset: {len(frames)} frames, {int(first.sum())} episodes <- {path} {meta}", flush=True)
    else:
        resume = ckpt["collect"] if ckpt else None
        print(f"collecting {args.num_frames} frames of {env_name} (action repeat {action_repeat}, {cfg['policy']} "
              "actions)" + (f" from frame {resume['frames_done']}" if resume else ""), flush=True)
        if resume:
            run_utils.set_rng_state(ckpt["rng"])
        policy = None
        if cfg["actor"] is not None:  # the saved actor samples its actions with its own script's `act`
            actor = cfg["actor"].to(device)
            policy = lambda obs: cfg["act"](actor, obs, device, sample=True)  # noqa: E731
        frames, first = collect_frames(env_name, args.num_frames, args.seed, action_repeat, args.episode_length,
                                       policy, cfg["pixels"], resume, run.interrupts, run.stop_collecting)
        print(f"dataset: saving {len(frames)} frames to {path} ...", flush=True)
        ae_files.save_dataset(path, frames, first, env_id=env_name, policy=cfg["policy"], action_repeat=action_repeat,
                              seed=args.seed)
        print(f"dataset: {len(frames)} frames, {int(first.sum())} episodes -> {path}", flush=True)

    frames_t = torch.as_tensor(frames, device=device)
    starts_t = torch.as_tensor(episode_starts(first), device=device)
    if cfg["autoencoder"] is not None:  # measure a trained autoencoder on every frame of the data, train nothing
        encoder, decoder, k = cfg["autoencoder"]
        encoder, decoder, idx = encoder.to(device), decoder.to(device), torch.arange(len(frames), device=device)
        mse, mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, idx, k, args.seed,
                                    label=f"MSE of {args.eval_encoder}")
        obs = stack_frames(frames_t, starts_t, idx[: args.png_frames], k)
        return run.finish_evaluation(k, len(frames), mse, mse_255, obs, reconstruct(encoder, decoder, obs))

    k = args.frames_per_input
    cut = split_heldout(first, args.heldout_fraction)
    n_batches = cut // args.batch_size  # the ragged last batch is dropped
    run_utils.require(n_batches >= 1, f"--batch-size {args.batch_size} is larger than the {cut} training frames "
                      f"(the split falls on an episode boundary); rerun with --dataset {path} and a smaller batch")
    heldout_idx = torch.arange(cut, len(frames), device=device)[: args.eval_frames]
    rng = np.random.default_rng(args.seed)
    train_eval_idx = torch.as_tensor(np.sort(rng.choice(cut, size=min(cut, len(heldout_idx)), replace=False)),
                                     device=device)

    # the DMC scripts' encoder with SAC-AE's initialisation, and the SAC-AE decoder (spec §5)
    encoder = Encoder((3 * k, *frames.shape[2:])).to(device)
    encoder.apply(ae_weight_init)
    decoder = Decoder(3 * k).to(device)
    encoder_optimizer, decoder_optimizer = make_ae_optimizers(encoder, decoder, args.encoder_lr, args.decoder_lr,
                                                              args.decoder_weight_lambda)
    modules = {"encoder": encoder, "decoder": decoder, "encoder_optimizer": encoder_optimizer,
               "decoder_optimizer": decoder_optimizer}
    # perm and running: the epoch's minibatch order and summed reconstruction loss; the first checkpoint is written
    # as training starts, so that a run that collected its frames never collects them again
    train = {"update": 0, "perm": None, "running": None, "history": [], "next_checkpoint": 0}
    if ckpt and ckpt["phase"] == "train":
        train = run.restore_training(ckpt, modules, device)
    total = args.epochs * n_batches
    progress = run_utils.Progress(total, 0, train["update"])
    while train["update"] < total:
        update = train["update"]
        run.checkpoint_when_due(update, train, modules)
        epoch, b = divmod(update, n_batches)
        if b == 0:
            train["perm"], train["running"] = torch.randperm(cut, device=device), torch.zeros((), device=device)
        obs = stack_frames(frames_t, starts_t, train["perm"][b * args.batch_size: (b + 1) * args.batch_size], k)
        metrics = update_autoencoder(encoder, decoder, encoder_optimizer, decoder_optimizer, obs,
                                     args.decoder_latent_lambda)
        train["running"] += metrics["losses/reconstruction_mse"]
        train["update"] += 1
        if b + 1 < n_batches:
            if progress.due():
                print(f"{ae_files.progress_line(progress, train['update'])} | epoch {epoch + 1}/{args.epochs}",
                      flush=True)
            continue
        label = f"epoch {epoch + 1}/{args.epochs}: MSE"
        train_mse, train_mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, train_eval_idx, k, args.seed,
                                                label=f"{label} on training inputs")
        heldout_mse, heldout_mse_255 = evaluate_mse(encoder, decoder, frames_t, starts_t, heldout_idx, k, args.seed,
                                                    label=f"{label} on held-out inputs")
        point = {"ae/epoch": epoch + 1, "ae/train_loss": train["running"].item() / n_batches, "ae/train_mse": train_mse,
                 "ae/heldout_mse": heldout_mse, "ae/train_mse_255": train_mse_255,
                 "ae/heldout_mse_255": heldout_mse_255}
        train["history"].append(point)
        run.log_epoch(progress, train["update"], point)

    obs = stack_frames(frames_t, starts_t, heldout_idx[: args.png_frames], k)
    return run.finish_training(encoder, decoder, k, obs, reconstruct(encoder, decoder, obs), train["history"],
                               num_frames=len(frames), train_frames=cut, heldout_frames=len(frames) - cut)


# -- Run bookkeeping: --encoder-path of the pixel scripts, validation, the command line (the rest: ae_files.py) --


class PretrainedEncoder(nn.Module):
    """--encoder-path of sac_pixels.py and drq_sac.py, the report's "DrQ on SAC+AE" (§2, §4): this file's Encoder
    (`pretrained`, loaded and frozen by `freeze`) on each of the last `latent_stack` steps (step j: frames
    j .. j + F - 1), the latents concatenated; one shift moves all frames."""

    def __init__(self, path: str, latent_stack: int, channels_last: bool = False):
        super().__init__()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.k, self.n, self.pretrained = ckpt["frames_per_input"], latent_stack, ckpt["encoder"]
        self.encoder = Encoder((3 * self.k, 84, 84), ckpt["feature_dim"], channels_last=channels_last)
        self.feature_dim = latent_stack * self.encoder.feature_dim

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> torch.Tensor:
        b, _, h, w = obs.shape
        channels = torch.arange(3 * self.k, device=obs.device) + 3 * torch.arange(self.n, device=obs.device)[:, None]
        with torch.no_grad():  # the N steps' inputs batched as B * N
            return self.encoder(obs[:, channels.flatten()].reshape(b * self.n, 3 * self.k, h, w)).reshape(b, -1)

    def freeze(self) -> None:
        """Loads the pretrained weights (after the actor and critic, which initialise what they hold) and freezes
        them."""
        self.encoder.load_state_dict(self.pretrained)
        self.requires_grad_(False)


def frames_per_observation(encoder_path: str | None, latent_stack: int) -> int:
    """The frames a pixel script stacks: 3 (spec §1.4); with --encoder-path those of the last `latent_stack` encoder
    inputs (PretrainedEncoder's)."""
    if encoder_path is None:
        return 3
    return latent_stack + ae_files.load_encoder_checkpoint(encoder_path, Encoder)["frames_per_input"] - 1


def validate(args: Args, argv: list[str], ckpt: dict | None = None) -> dict:
    """One-line errors for bad input, before anything is written (ae_files.check_inputs): the dataset (--dataset, or
    the one a resumed run collected), the policy and the encoder to evaluate, with the resolved settings."""
    return ae_files.check_inputs(args, argv, ckpt, Encoder, Decoder, split_heldout)


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, parsed by tyro (sweep.py checks each cell with it before starting anything)."""
    return tyro.cli(Args, args=argv)


if __name__ == "__main__":
    main(parse_args(), sys.argv[1:])

"""The files of the autoencoder path, written once for the scripts that share them and no part of any algorithm:
the frame dataset (.npz) that pretrain_autoencoder.py collects, its encoder.pt (the encoder and decoder that
--encoder-path of sac_ae.py, sac_ae_frozen.py, sac_pixels.py and drq_sac.py and --eval-encoder read), its figures,
and the saved policy whose actions collect frames (--policy-checkpoint). Every reader loads without pickle
(allow_pickle off, weights_only=True): a file from elsewhere cannot run code, and a bad file is a one-line error."""
import importlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import dmc_envs
import run_utils

POLICY_SCRIPTS = ("sac_state", "sac_pixels", "drq_sac")  # the scripts whose saved actor can collect frames


def save_dataset(path: Path, frames: np.ndarray, first: np.ndarray, **meta) -> None:
    """Compressed uint8 frames, stored once; `first` marks each episode's first frame, from which any frame stack
    is rebuilt (pretrain_autoencoder.stack_frames), so one dataset serves --frames-per-input 1 and 3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, frames=frames, first=first, **{k: np.asarray(v) for k, v in meta.items()})
    os.replace(tmp, path)


def load_dataset(path: Path, with_frames: bool = True):
    """(frames, first, meta) of a dataset .npz. with_frames=False leaves the frames out (None): they take long to
    decompress, and the rest is enough to check the file and plan the run."""
    run_utils.require(path.is_file(), f"--dataset {path} does not exist")
    try:
        with np.load(path) as d:  # allow_pickle stays off: a file from elsewhere cannot run code
            run_utils.require("frames" in d.files and "first" in d.files,
                              f"--dataset {path} has no 'frames'/'first' arrays (not written by this script)")
            frames = d["frames"] if with_frames else None
            first = d["first"].astype(bool)
            meta = {k: d[k].item() for k in d.files if k not in ("frames", "first")}
    except Exception as exc:  # a truncated or foreign file fails in many ways
        run_utils.fail(f"--dataset {path} is not a dataset .npz of this script ({type(exc).__name__}: "
                       f"{run_utils.first_line(exc)})")
    if frames is not None:
        run_utils.require(frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1] == 3
                          and len(frames) == len(first),
                          f"--dataset {path}: expected uint8 frames (N, 3, H, W), got {frames.dtype} {frames.shape}")
    return frames, first, meta


def save_encoder_checkpoint(path: Path, encoder: nn.Module, decoder: nn.Module, frames_per_input: int, env_id: str,
                            extra: dict) -> None:
    """What --encoder-path reads (sac_ae_frozen.py, sac_ae.py, drq_sac.py): the encoder's and the decoder's state
    dicts and the input layout; written atomically, loadable with weights_only=True."""
    run_utils.save_checkpoint(path, "pretrain_autoencoder", {"encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                                             "frames_per_input": frames_per_input, "feature_dim": encoder.feature_dim,
                                             "env_id": env_id, **extra})


def load_autoencoder(path: str, encoder_class, decoder_class) -> tuple[nn.Module, nn.Module, int]:
    """Encoder and decoder of an encoder.pt of this script (read on the CPU with weights_only=True; a bad file is a
    one-line error) and its frames per input."""
    run_utils.require(Path(path).is_file(), f"--eval-encoder {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        k = ckpt["frames_per_input"]
        encoder = encoder_class((3 * k, 84, 84), ckpt["feature_dim"])
        decoder = decoder_class(3 * k, ckpt["feature_dim"])
        encoder.load_state_dict(ckpt["encoder"])
        decoder.load_state_dict(ckpt["decoder"])
    except Exception as exc:  # a wrong file fails in many ways
        run_utils.fail(f"--eval-encoder {path} is not an encoder.pt of pretrain_autoencoder.py "
                       f"({type(exc).__name__}: {run_utils.first_line(exc)})")
    return encoder, decoder, k


def load_encoder_checkpoint(path: str, encoder_class) -> dict:
    """--encoder-path of sac_ae.py, sac_ae_frozen.py, sac_pixels.py, drq_sac.py: an encoder.pt of this script, read with
    weights_only=True (a file from elsewhere cannot run code) and checked early: a bad file is a one-line error."""
    run_utils.require(Path(path).is_file(), f"--encoder-path {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        encoder_class((3 * ckpt["frames_per_input"], 84, 84), ckpt["feature_dim"]).load_state_dict(ckpt["encoder"])
    except Exception as exc:  # a wrong file fails in many ways
        run_utils.fail(f"--encoder-path {path} is not an encoder.pt of pretrain_autoencoder.py "
                       f"({type(exc).__name__}: {run_utils.first_line(exc)})")
    return ckpt


def load_policy(path: str, device: torch.device):
    """The script module (sac_state, sac_pixels or drq_sac) and actor of its model.pt or checkpoint.pt (read with
    weights_only=True), the run's flags with the action repeat resolved, and whether the actor acts on pixels. The
    actor is built by its own script's classes, so it acts bitwise as it did in its run."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        script, state, saved = ckpt["script"], ckpt["agent"]["actor"], ckpt["args"]
    except Exception as exc:  # a wrong file fails in many ways
        run_utils.fail(f"--policy-checkpoint {path} is not a model.pt of sac_state.py, sac_pixels.py or drq_sac.py "
                       f"--save-model ({type(exc).__name__}: {run_utils.first_line(exc)})")
    run_utils.require(script in POLICY_SCRIPTS, f"--policy-checkpoint {path} is a checkpoint of {script}.py; collect "
                      "with a sac_state.py, sac_pixels.py or drq_sac.py policy")
    run_utils.require(not any(key.startswith("encoder.encoder.") for key in state),
                      f"--policy-checkpoint {path} acts on a pretrained encoder (drq_sac.py --encoder-path); collect "
                      "with an end-to-end sac_state.py, sac_pixels.py or drq_sac.py policy")
    module = importlib.import_module(script)
    pixels = any(key.startswith("encoder.convs.") for key in state)
    if pixels:  # in the memory layout the policy ran in, so its actions are bitwise its own
        encoder = module.Encoder((state["encoder.convs.0.weight"].shape[1], 84, 84),
                                 saved.get("feature_dim", module.FEATURE_DIM), channels_last=saved.get("channels_last", False))
    else:
        encoder = module.StateEncoder((state["trunk.0.weight"].shape[1],))
    actor = module.Actor(encoder, state["trunk.4.weight"].shape[0] // 2, saved["hidden_dim"]).to(device)
    actor.load_state_dict(state)
    action_repeat = saved["action_repeat"] or dmc_envs.default_action_repeat(saved["env_id"])
    return module, actor, {**saved, "action_repeat": action_repeat}, pixels


def save_figures(run_dir: Path, obs: torch.Tensor, rec: torch.Tensor, history: list) -> None:
    """pretrain_autoencoder.py's figures. reconstructions.png: inputs `obs` (top row) over their reconstructions `rec`
    (bottom row, uint8), the newest frame of each; with a `history` (its per-epoch points), loss_curves.png: train and
    held-out MSE per epoch in grey levels^2 and on the target scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(obs), figsize=(1.6 * len(obs), 3.4), squeeze=False)
    for j in range(len(obs)):
        for row, img in enumerate((obs[j, -3:], rec[j, -3:])):
            axes[row, j].imshow(img.permute(1, 2, 0).cpu().numpy())
            axes[row, j].axis("off")
        axes[0, j].set_title(f"#{j}", fontsize=8)
    for row, text in enumerate(("original", "reconstructed")):
        axes[row, 0].text(-8, 42, text, rotation=90, va="center", ha="right", fontsize=8)
    figures = [(fig, "reconstructions.png")]
    if history:
        epochs = [h["ae/epoch"] for h in history]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, scale, label in ((axes[0], "_255", "MSE, grey levels^2 (0..255)"),
                                 (axes[1], "", "MSE, 5-bit target scale")):
            for split, name in (("train", "train"), ("heldout", "held-out")):
                ax.plot(epochs, [h[f"ae/{split}_mse{scale}"] for h in history], marker=".", label=name)
            ax.set(xlabel="epoch", ylabel=label, yscale="log")
            ax.legend()
        figures.append((fig, "loss_curves.png"))
    for fig, name in figures:
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        plt.close(fig)

"""The files of the autoencoder path, written once for the scripts that share them and no part of any algorithm:
the frame dataset (.npz) that pretrain_autoencoder.py collects, its encoder.pt (the encoder and decoder that
--encoder-path of sac_ae.py, sac_ae_frozen.py, sac_pixels.py and drq_sac.py and --eval-encoder read), its figures,
and the saved policy whose actions collect frames (--policy-checkpoint); and the rest of pretrain_autoencoder.py's
run bookkeeping (its inputs checked, progress lines, checkpoint.pt, final.json). Every reader loads without pickle
(allow_pickle off, weights_only=True): a file from elsewhere cannot run code, and a bad file is a one-line error."""
import importlib
import os
import time
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
    run_utils.save_checkpoint(path, "pretrain_autoencoder", {
        "encoder": encoder.state_dict(), "decoder": decoder.state_dict(), "frames_per_input": frames_per_input,
        "feature_dim": encoder.feature_dim, "env_id": env_id, **extra})


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


def check_pretrained(args, ckpt: dict | None, encoder_class) -> tuple[dict | None, int]:
    """sac_ae.py's optional --encoder-path (or a resumed run's copy of it), checked against --frames-per-input and
    --feature-dim; returns it (None without one) and the frames per encoder input (the checkpoint's, else
    --frames-per-input, else 3)."""
    pretrained = ckpt["pretrained"] if ckpt else (args.encoder_path and
                                                  load_encoder_checkpoint(args.encoder_path, encoder_class))
    k = pretrained["frames_per_input"] if pretrained else (args.frames_per_input or 3)
    run_utils.require(args.frames_per_input in (None, k),
                      f"--frames-per-input {args.frames_per_input} differs from the encoder checkpoint's {k}")
    if pretrained:
        run_utils.require(pretrained["feature_dim"] == args.feature_dim, f"--feature-dim {args.feature_dim} differs "
                          f"from the encoder checkpoint's {pretrained['feature_dim']}")
    return pretrained or None, k


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
        encoder = module.Encoder((state["encoder.convs.0.weight"].shape[1], 84, 84), saved.get(
            "feature_dim", module.FEATURE_DIM), channels_last=saved.get("channels_last", False))
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


# -- pretrain_autoencoder.py's run: its inputs checked, progress lines, checkpoint.pt, the files at the end -------


def check_inputs(args, argv: list[str], ckpt: dict | None, encoder_class, decoder_class, split_heldout) -> dict:
    """pretrain_autoencoder.validate (the dataset split by the script's `split_heldout`, the autoencoder to evaluate
    built from its classes)."""
    run_utils.positive(num_frames=args.num_frames, epochs=args.epochs, batch_size=args.batch_size,
                       episode_length=args.episode_length, eval_frames=args.eval_frames, png_frames=args.png_frames,
                       checkpoint_interval=args.checkpoint_interval)
    if args.action_repeat is not None:
        run_utils.positive(action_repeat=args.action_repeat)
    run_utils.require(args.num_frames >= 2, f"--num-frames must be at least 2 (training and held-out frames), got "
                      f"{args.num_frames}")
    run_utils.require(0.0 < args.heldout_fraction < 1.0,
                      f"--heldout-fraction must lie in (0, 1), got {args.heldout_fraction}")
    env_name = "-".join(dmc_envs.resolve_env_id(args.env_id))
    dataset_path = ckpt["dataset"] if ckpt and ckpt["phase"] == "train" else args.dataset
    dataset, module, actor, saved, pixels, policy = None, None, None, {}, True, "random"
    if dataset_path is not None:
        dataset = load_dataset(Path(dataset_path), with_frames=False)
        env_name = str(dataset[2].get("env_id", env_name))
        action_repeat = int(dataset[2].get("action_repeat",
                                           args.action_repeat or dmc_envs.default_action_repeat(env_name)))
        train_frames = split_heldout(dataset[1], args.heldout_fraction)
    else:
        if args.policy_checkpoint is not None:
            run_utils.require(Path(args.policy_checkpoint).is_file(),
                              f"--policy-checkpoint {args.policy_checkpoint} does not exist")
            module, actor, saved, pixels = load_policy(args.policy_checkpoint, torch.device("cpu"))
            env_name = "-".join(dmc_envs.resolve_env_id(saved["env_id"]))
            policy = f"policy-{Path(args.policy_checkpoint).parent.name}"
        action_repeat = args.action_repeat or saved.get("action_repeat") or dmc_envs.default_action_repeat(env_name)
        dataset_path = str(Path(args.dataset_dir) / f"{env_name}__{policy}__{args.num_frames}__{args.seed}.npz")
        run_utils.check_runs_dir(args.dataset_dir, "--dataset-dir")
        # the split falls on an episode boundary, known once the frames are collected
        train_frames = args.num_frames - max(int(round(args.num_frames * args.heldout_fraction)), 1)
    autoencoder = None
    if args.eval_encoder is not None:
        autoencoder = load_autoencoder(args.eval_encoder, encoder_class, decoder_class)
    else:
        run_utils.require(args.batch_size <= train_frames, f"--batch-size {args.batch_size} is larger than the "
                          f"training split (~{train_frames} frames)")
    return {"env_name": env_name, "action_repeat": action_repeat, "dataset": dataset, "dataset_path": dataset_path,
            "actor": actor, "act": module and module.act, "pixels": pixels, "policy": policy,
            "autoencoder": autoencoder, "device": run_utils.check_run_flags(args, argv)}


def progress_line(progress: run_utils.Progress, step: int) -> str:
    """run_utils.Progress's line without the episode return and the learning phase, which only RL runs have; a step
    here is a frame collected or a minibatch update."""
    return progress.line(step, None).replace(" | return n/a", "").replace("after learning starts", "n/a")


class PretrainRun:
    """pretrain_autoencoder.py's run: its folder, args.json and metrics.jsonl (`logger`), SIGINT/SIGTERM
    (`interrupts`), checkpoint.pt of either phase, and the end (final.json; after training, encoder.pt and figures)."""

    def __init__(self, args, script: str, cfg: dict, ckpt: dict | None, t_start: float):
        self.args, self.script, self.env_name, self.path = args, script, cfg["env_name"], Path(cfg["dataset_path"])
        self.name, self.dir = run_utils.run_location(args, self.env_name, ckpt)
        work = (f"evaluate {args.eval_encoder}" if args.eval_encoder else
                f"{args.epochs} epochs of batch {args.batch_size}, {args.frames_per_input} frame(s) per input")
        data = (f"the frames of {self.path}" if cfg["dataset"] is not None else f"{args.num_frames} frames of "
                f"{cfg['policy']} actions (action repeat {cfg['action_repeat']}), saved to {self.path}")
        resuming = {None: "", "collect": ", resuming the collection", "train": ", resuming the training"}
        run_utils.announce(script, self.env_name, cfg["device"], self.dir,
                           f"{work} on {data}{resuming[ckpt and ckpt['phase']]}")
        record = run_utils.run_record(args, script, self.name, cfg["device"], env_id=self.env_name,
                                      action_repeat=cfg["action_repeat"], dataset_path=str(self.path))
        self.logger = run_utils.RunLogger(args, self.dir, record, resume=ckpt["logger"] if ckpt else None)
        self.interrupts = run_utils.Interrupts()
        self.t_start = t_start - (ckpt["elapsed"] if ckpt else 0.0)  # wall time counts a resumed run's segments

    def checkpoint(self, **state) -> Path:
        """checkpoint.pt: the flags, the phase ("collect" or "train") and what it needs to continue, the RNGs."""
        path = self.dir / run_utils.CHECKPOINT
        run_utils.save_checkpoint(path, self.script, {"args": vars(self.args), "run_name": self.name, **state,
                                                      "rng": run_utils.rng_state(), "logger": self.logger.position(),
                                                      "elapsed": time.time() - self.t_start})
        return path

    def stop_collecting(self, collected: dict) -> None:
        """collect_frames' on_interrupt: checkpoint the frames so far, then exit with the command that resumes."""
        path = self.checkpoint(phase="collect", collect=collected)
        self.interrupts.exit(collected["frames_done"], path, run_utils.resume_command(self.dir))

    def checkpoint_when_due(self, update: int, train: dict, modules: dict) -> None:
        """Every --checkpoint-interval updates and after SIGINT/SIGTERM (then exits): `train` and the `modules`."""
        run_utils.checkpoint_when_due(update, train, self.args.checkpoint_interval, self.interrupts, lambda: (
            self.checkpoint(phase="train", dataset=str(self.path), train=train,
                            autoencoder={name: module.state_dict() for name, module in modules.items()})), self.dir)

    @staticmethod
    def restore_training(ckpt: dict, modules: dict, device: torch.device) -> dict:
        """The inverse of checkpoint_when_due: the `modules`' states and the RNGs put back; returns `train`."""
        for name, module in modules.items():
            module.load_state_dict(ckpt["autoencoder"][name])
        train = ckpt["train"]
        for name in ("perm", "running"):
            train[name] = None if train[name] is None else train[name].to(device)
        run_utils.set_rng_state(ckpt["rng"])
        return train

    def log_epoch(self, progress: run_utils.Progress, update: int, point: dict) -> None:
        """An epoch's point in metrics.jsonl (global_step = epoch) and its line."""
        self.logger.log(point["ae/epoch"], **point)
        print(f"{progress_line(progress, update)} | epoch {point['ae/epoch']}/{self.args.epochs} | MSE train "
              f"{point['ae/train_mse']:.3e} held-out {point['ae/heldout_mse']:.3e} | grey levels^2 train "
              f"{point['ae/train_mse_255']:.2f} held-out {point['ae/heldout_mse_255']:.2f}", flush=True)

    def finish_training(self, encoder: nn.Module, decoder: nn.Module, k: int, obs: torch.Tensor, rec: torch.Tensor,
                        history: list, **sizes: int) -> dict:
        """encoder.pt, the figures (held-out inputs `obs` over their reconstructions `rec`), final.json."""
        encoder_path = self.dir / "encoder.pt"
        save_encoder_checkpoint(encoder_path, encoder, decoder, k, self.env_name,
                                {"dataset": str(self.path), "epochs": self.args.epochs, "run_name": self.name})
        save_figures(self.dir, obs, rec, history)
        last = {key.removeprefix("ae/"): value for key, value in history[-1].items() if key != "ae/epoch"}
        return self.finish(self.args.epochs, k, f"encoder -> {encoder_path}", **sizes, dataset=str(self.path),
                           encoder_path=str(encoder_path), **last)

    def finish_evaluation(self, k: int, num_frames: int, mse: float, mse_255: float, obs: torch.Tensor,
                          rec: torch.Tensor) -> dict:
        """--eval-encoder's point in metrics.jsonl, its figure (inputs `obs` over `rec`), final.json."""
        self.logger.log(0, **{"ae/eval_mse": mse, "ae/eval_mse_255": mse_255})
        save_figures(self.dir, obs, rec, [])
        return self.finish(0, k, f"{self.args.eval_encoder} on {self.path}: MSE {mse:.3e} ({mse_255:.2f} grey "
                           f"levels^2)", num_frames=num_frames, dataset=str(self.path),
                           evaluated_encoder=self.args.eval_encoder, eval_mse=mse, eval_mse_255=mse_255)

    def finish(self, epochs: int, k: int, message: str, **fields) -> dict:
        """final.json with the run's `fields` and wall time; the checkpoint goes, the run is done."""
        final = {"env_id": self.env_name, "algo": self.args.exp_name, "seed": self.args.seed, "epochs": epochs,
                 "frames_per_input": k, **fields, "wall_time_s": time.time() - self.t_start, "run_name": self.name}
        self.logger.finish(final)
        (self.dir / run_utils.CHECKPOINT).unlink(missing_ok=True)
        print(message, flush=True)
        return final

"""``recon train``: train a model from a YAML config on a folder of fully sampled fastMRI-style files.

The config (:mod:`recon.config`) names the model and its size, the optimiser settings and the data pipeline (masks,
accelerations, coil maps); the slices are undersampled on the fly (:mod:`recon.training.data`). RUN_DIR receives
``config.yaml`` (the resolved config: every setting, defaults included, with the command-line overrides applied),
``log.jsonl`` (one JSON record per logged step and per validation), and checkpoints ``step-XXXXXXXX/`` and ``last/``
(``model.safetensors``, ``config.json``, ``state.pt``). ``--resume`` continues from ``RUN_DIR/last`` with the
settings of ``RUN_DIR/config.yaml``. Under ``torchrun --nproc_per_node N`` each process trains on its share of the
slices and the gradients are averaged (gloo on CPUs, nccl on GPUs); only rank 0 validates, logs and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

HELP = "train a model from a YAML config (works under torchrun)"
DESCRIPTION = """\
Train a model from a YAML config on a folder of fully sampled multi-coil fastMRI-style files.

The config (configs/recon/<model>.yaml) names the model and its size, the optimiser settings and the data pipeline
(masks, accelerations, coil maps); slices are undersampled on the fly with mixed masks. RUN_DIR receives config.yaml
(the resolved config: every setting, with the command-line overrides applied), log.jsonl (loss and validation SSIM /
PSNR / NMSE records) and checkpoints step-XXXXXXXX/ and last/ (model.safetensors, config.json, state.pt).
--resume continues from RUN_DIR/last. Under `torchrun --nproc_per_node N` the processes share the slices and average
their gradients; rank 0 validates, logs and writes."""
EXAMPLES = """\
  recon synth data/train --volumes 8 --slices 8 --size 128 --coils 8 --source ellipses
  recon synth data/val --volumes 2 --slices 4 --size 128 --coils 8 --source ellipses --seed 1
  recon train --config configs/recon/cirim.yaml --data data/train --val data/val --out runs/cirim
  recon train --config configs/recon/cirim.yaml --data data/train --out runs/cirim --resume --max-steps 4000
  torchrun --nproc_per_node 2 -m recon train --config configs/recon/rim.yaml --data data/train --out runs/rim
"""

CONFIG_NAME = "config.yaml"
LOG_NAME = "log.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``recon train``."""
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config (configs/recon/<model>.yaml); with --resume, default RUN_DIR/config.yaml",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of fully sampled multi-coil .h5 files")
    parser.add_argument("--val", type=Path, help="folder of validation files (mean SSIM logged on rank 0)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, config.yaml, log.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last")
    parser.add_argument("--max-steps", type=int, help="override train.max_steps")
    parser.add_argument("--device", help="override train.device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--seed", type=int, help="override train.seed")
    parser.add_argument("--val-every", type=int, help="override train.val_every (0: only at the end)")
    parser.add_argument("--log-every", type=int, help="override train.log_every")
    parser.add_argument("--checkpoint-every", type=int, help="override train.checkpoint_every")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), help="override train.precision (bf16: bfloat16 autocast, any device)"
    )
    parser.add_argument("--workers", type=int, help="override train.num_workers (DataLoader worker processes)")
    parser.add_argument(
        "--initial-weights",
        type=Path,
        help="start from these weights: a .safetensors of the same model and config "
        "(e.g. recon/weights/rim.safetensors) or a recon train run / checkpoint folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (also RECON_NO_PROGRESS=1)")


def _fail(message: str) -> Exception:
    from recon.cli._common import CLIError

    return CLIError(message)


def _resolve_config(args: argparse.Namespace) -> Any:
    from recon.config import ConfigError, load_config

    run_dir: Path = args.out
    saved = run_dir / CONFIG_NAME
    path = args.config
    if path is None:
        if not args.resume:
            raise _fail("--config is required (a YAML file such as configs/recon/cirim.yaml)")
        if not saved.is_file():
            raise _fail(f"{saved}: no saved config to resume with; pass --config")
        path = saved
    try:
        config = load_config(path)
    except ConfigError as err:
        raise _fail(str(err)) from None
    overrides = {
        "max_steps": args.max_steps,
        "device": args.device,
        "seed": args.seed,
        "val_every": args.val_every,
        "log_every": args.log_every,
        "checkpoint_every": args.checkpoint_every,
        "precision": args.precision,
        "num_workers": args.workers,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("max_steps", "val_every", "log_every", "checkpoint_every", "num_workers"):
        if key in overrides and overrides[key] < 0:
            flag = "--workers" if key == "num_workers" else f"--{key.replace('_', '-')}"
            raise _fail(f"{flag} must be >= 0; got {overrides[key]}")
    config.train = dataclasses.replace(
        config.train,
        **overrides,
        checkpoint_dir=str(run_dir),
        resume="last" if args.resume else None,
        progress=not args.no_progress and os.environ.get("RECON_NO_PROGRESS") != "1",
    )
    return config


def _resumed_step(run_dir: Path) -> int | None:
    """The step recorded in ``run_dir/last/config.json``, or ``None`` when it cannot be read (the loop reports)."""
    try:
        step = json.loads((run_dir / "last" / "config.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def _initial_model(config: Any, path: Path) -> Any:
    """The config's model with the weights of ``path`` (safetensors; keys and shapes must match exactly)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from recon.cli._common import checkpoint_folder
    from recon.models import build_model

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.model_config)
    if path.is_dir():  # a run folder or a checkpoint folder of `recon train`
        path = checkpoint_folder(path) / "model.safetensors"
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise _fail(f"{path}: --initial-weights must be a readable .safetensors file ({err})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    resized = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or resized:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        if resized:
            k = resized[0]
            problems.append(
                f"{len(resized)} shape mismatch(es), e.g. {k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
            )
        raise _fail(
            f"{path}: --initial-weights do not fit the config's {config.model} model "
            f"({', '.join(f'{k}={v}' for k, v in config.model_config.items()) or 'defaults'}): {'; '.join(problems)}"
        )
    model.load_state_dict(state)
    return model


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success (user errors raise :class:`recon.cli._common.CLIError`)."""
    import torch

    from recon.cli._common import resolve_device
    from recon.config import save_config
    from recon.data.mri_data import FastMRIDataError
    from recon.training.data import SliceMaskDataset, make_validator
    from recon.training.loop import train

    if args.threads is not None:
        if args.threads < 1:
            raise _fail(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    run_dir: Path = args.out
    if args.resume and not (run_dir / "last").is_dir():
        raise _fail(f"{run_dir / 'last'}: no checkpoint to resume from (train without --resume first)")
    if not args.resume and (run_dir / "last").exists():
        raise _fail(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    config = _resolve_config(args)
    if config.train.max_steps < 1:  # 0 steps would save the untrained model as if it were a trained checkpoint
        source = "--max-steps" if args.max_steps is not None else "train.max_steps of the config"
        raise _fail(f"{source} must be >= 1; got {config.train.max_steps}")
    if config.train.device is not None:  # a missing GPU is one line before the run folder is made
        resolve_device(config.train.device)
    for flag, folder in (("--data", args.data), ("--val", args.val)):
        if folder is not None and not folder.is_dir():
            raise _fail(f"{folder}: {flag} must be a folder of .h5 files")
    try:
        dataset = SliceMaskDataset(args.data, config.data, seed=config.train.seed, train=True)
        validate = None
        if args.val is not None:
            validate = make_validator(SliceMaskDataset(args.val, config.data, seed=config.train.seed, train=False))
    except (FastMRIDataError, ValueError) as err:
        raise _fail(str(err)) from None

    model = None
    if args.initial_weights is not None and not args.resume:  # checked before the run folder is made
        model = _initial_model(config, args.initial_weights)
    rank = int(os.environ.get("RANK", "0"))
    log_path = run_dir / LOG_NAME
    if rank == 0:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, run_dir / CONFIG_NAME)
        except OSError as err:
            raise _fail(f"{run_dir}: cannot write the run folder ({err.strerror or err})") from None

    def log(record: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        text = " ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        tqdm.write(text)
        with log_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    if rank == 0:
        print(
            f"training {config.model} on {len(dataset)} slices from {args.data} "
            f"({os.environ.get('WORLD_SIZE', '1')} process(es)); steps {config.train.max_steps}; run folder {run_dir}",
            flush=True,
        )
    done = _resumed_step(run_dir) if args.resume else None
    if rank == 0 and done is not None and done >= config.train.max_steps:
        # the loop would return at once: say so rather than look like it trained
        print(
            f"recon train: {run_dir} is already at step {done}, at or past max_steps {config.train.max_steps}; "
            "nothing to train (raise --max-steps to continue)",
            flush=True,
        )
    data = dataclasses.asdict(config.data)
    # `data` twice: top level, and inside train_config where `recon predict --checkpoint` reads the pre-processing
    extra = {"data": data, "train_config": {**dataclasses.asdict(config.train), "data": data}}
    result = train(config.train, dataset, model=model, validate=validate, log=log, checkpoint_extra=extra)
    if rank == 0:
        final = result.validations[-1] if result.validations else {}
        summary = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k != "step")
        print(f"done: step {result.step}; checkpoint {run_dir / 'last'}" + (f"; {summary}" if summary else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m recon.cli.train` without the dispatcher
    import sys

    from recon.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))

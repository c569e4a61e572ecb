"""Helpers shared by the ``recon`` subcommands: errors, input listing, sharding, mask and model options."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")
H5_SUFFIXES = (".h5", ".hdf5")  # as recon.data.mri_data (not imported: `recon --help` should not load torch)

__all__ = [
    "CLIError",
    "MASK_DEFAULTS",
    "add_mask_arguments",
    "check_writable_dir",
    "check_writable_file",
    "checkpoint_files",
    "checkpoint_folder",
    "error_line",
    "list_inputs",
    "load_checkpoint_model",
    "load_default_model",
    "mask_func_from_args",
    "progress",
    "remove_if_left_empty",
    "resolve_device",
    "shard",
    "shard_info",
]


class CLIError(Exception):
    """A user-facing failure: ``main`` prints the message on one line (no traceback) and returns ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def error_line(command: str, message: str) -> None:
    """Print ``recon <command>: error: <message>`` on stderr, flattened to one line."""
    text = " ".join(str(message).split())
    print(f"recon {command}: error: {text}", file=sys.stderr, flush=True)


def progress(items: Iterable[T], desc: str, total: int | None = None, leave: bool = False) -> Iterator[T]:
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal, or with ``RECON_NO_PROGRESS=1``)."""
    from tqdm import tqdm

    disable = True if os.environ.get("RECON_NO_PROGRESS") == "1" else None
    return iter(tqdm(items, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True))


# ----------------------------------------------------------------------------------------------------------------
# Inputs, outputs and sharding


def list_inputs(path: str | os.PathLike) -> list[Path]:
    """The files to process: ``path`` itself if it is a file, else the ``*.h5`` / ``*.hdf5`` files directly in it.

    Raises:
        CLIError: If ``path`` does not exist, or is a folder without HDF5 files.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in H5_SUFFIXES)
        if not files:
            raise CLIError(f"{path}: no .h5 / .hdf5 files in this folder")
        return files
    raise CLIError(f"{path}: no such file or directory")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be created in it.

    Raises:
        CLIError: Naming the folder, when it cannot be created or written to.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():  # mkdir would only say "File exists" / "Not a directory"
        raise CLIError(f"{path}: cannot write to the output directory ({existing} is a file, not a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".recon-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        raise CLIError(f"{path}: cannot write to the output directory ({reason})") from None
    return path


@contextlib.contextmanager
def remove_if_left_empty(path: str | os.PathLike) -> Iterator[None]:
    """Remove, on leaving, the folders on the way to ``path`` that did not exist on entering and are still empty.

    A command that fails (or writes nothing) must not leave an empty output folder behind; folders that existed
    before, or that received any file, are kept (``rmdir`` only removes empty folders).
    """
    created = []  # deepest first
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        yield
    finally:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty (something was written), or already gone
                break


def check_writable_file(path: str | os.PathLike, what: str = "the output file") -> Path:
    """Check, before any work and without creating anything, that ``path`` could be written.

    The nearest existing ancestor must be a writable folder (missing folders below it are created at write time),
    so a slow command fails up front instead of after computing, and leaves no empty folder behind.

    Raises:
        CLIError: ``cannot write <what>`` naming the path and why.
    """
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"{path}: cannot write {what} (it is a folder)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{path}: cannot write {what} ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{path}: cannot write {what} (permission denied in {parent})")
    return path


def shard_info() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's ``RANK`` / ``WORLD_SIZE`` (``(0, 1)`` when unset)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise CLIError(
            f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} must be integers"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise CLIError(f"need 0 <= RANK < WORLD_SIZE; got RANK={rank}, WORLD_SIZE={world}")
    return rank, world


def resolve_device(device: str | None) -> str:
    """``device``, or by default ``cuda:LOCAL_RANK`` (torchrun) / ``cuda`` when a GPU is present, else ``cpu``.

    Raises:
        CLIError: For a string torch does not accept as a device, or a device this machine does not have.
    """
    import torch

    if device is None:
        if not torch.cuda.is_available():
            return "cpu"
        local = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(local) % torch.cuda.device_count()}" if local and local.isdigit() else "cuda"
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise CLIError(f"--device {device!r}: {err}") from None
    if parsed.type != "cpu":
        # checked before any output folder is made: a missing GPU must not leave an empty folder behind
        try:
            torch.empty(0, device=parsed)
        except (RuntimeError, AssertionError) as err:  # CPU-only builds raise AssertionError("Torch not compiled...")
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            cuda = "CUDA is not available on this machine" if parsed.type == "cuda" else "not available"
            raise CLIError(f"--device {device}: {cuda} ({reason}); use --device cpu") from None
    return device


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This process's share: every ``world_size``-th item from ``rank`` (a fixed split of a sorted list)."""
    return list(items[rank::world_size])


# ----------------------------------------------------------------------------------------------------------------
# Mask options


MASK_DEFAULTS = {"mask": "equispaced", "acceleration": 4.0, "center_fraction": 0.08, "seed": 0}


def add_mask_arguments(
    parser: argparse.ArgumentParser,
    seed: bool = True,
    title: str = "retrospective undersampling (fully sampled inputs; files with a mask keep it)",
    defaults_from: str | None = None,
) -> None:
    """``--mask``, ``--acceleration``, ``--center-fraction`` and (if ``seed``) ``--seed``.

    With ``defaults_from`` (e.g. ``"the predictions' provenance"``) the options default to ``None`` so the command
    can tell a given option from a default; the help names where the value comes from instead.
    """
    from recon.inference import MASK_TYPES

    def default(key: str) -> dict[str, object]:
        if defaults_from is None:
            return {"default": MASK_DEFAULTS[key], "help_default": "%(default)s"}
        return {"default": None, "help_default": f"default: from {defaults_from}, else {MASK_DEFAULTS[key]}"}

    group = parser.add_argument_group(title)
    d = default("mask")
    group.add_argument(
        "--mask", choices=sorted(MASK_TYPES), default=d["default"], help=f"mask type ({d['help_default']})"
    )
    d = default("acceleration")
    group.add_argument(
        "--acceleration", type=float, default=d["default"], help=f"undersampling factor ({d['help_default']})"
    )
    d = default("center_fraction")
    group.add_argument(
        "--center-fraction",
        type=float,
        default=d["default"],
        help=f"fully sampled centre fraction ({d['help_default']})",
    )
    if seed:
        d = default("seed")
        group.add_argument(
            "--seed",
            type=int,
            default=d["default"],
            help=f"mask seed, combined with each file name ({d['help_default']})",
        )


def mask_func_from_args(args: argparse.Namespace) -> Any:
    """The mask function of the parsed mask options; bad values raise :class:`CLIError`."""
    import math

    from recon.inference import build_mask_func

    # named here, not as "bad mask options": inf / nan / < 1 would otherwise run with an empty or meaningless mask
    acceleration = args.acceleration
    if acceleration is not None and not (math.isfinite(acceleration) and acceleration >= 1):
        raise CLIError(f"--acceleration must be a finite number >= 1; got {acceleration:g}")
    try:
        return build_mask_func(args.mask, args.acceleration, args.center_fraction)
    except ValueError as err:
        raise CLIError(f"bad mask options: {err}") from None


# ----------------------------------------------------------------------------------------------------------------
# Models


def _preprocessing(data: object, source: object) -> Any:
    from recon.inference import Preprocessing

    try:
        return Preprocessing.from_settings(data)
    except ValueError as err:
        raise CLIError(f"{source}: bad data settings ({err})") from None


def load_default_model(name: str) -> tuple[nn.Module, Any]:
    """The shipped default weights of ``name`` (:mod:`recon.weights`) and the pre-processing they were trained with.

    Returns:
        ``(model, recon.inference.Preprocessing)``.

    Raises:
        CLIError: When the weights are not installed or cannot be loaded.
    """
    try:
        import recon.weights as weights
    except ImportError:
        raise CLIError(
            f"no shipped default weights for {name!r} in this installation (recon.weights is missing); "
            "pass --checkpoint DIR (a folder written by `recon train`)"
        ) from None
    try:
        model = weights.load_default_model(name)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CLIError(f"cannot load the default weights of {name!r}: {err}") from None
    data = None
    if hasattr(weights, "default_config"):
        try:
            data = getattr(weights.default_config(name), "data", None)
        except (OSError, ValueError, KeyError) as err:
            raise CLIError(f"cannot read the config of the default weights of {name!r}: {err}") from None
    return model.eval(), _preprocessing(data, f"default weights {name!r}")


def _refuse_pickle(path: Path) -> CLIError:
    return CLIError(
        f"{path}: refused: this checkpoint carries a pickle payload (objects other than tensors), which could run "
        "arbitrary code when loaded; only safetensors files and torch.load(weights_only=True)-safe state dicts are "
        "accepted (re-save it with `recon train` or safetensors.torch.save_file)"
    )


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file: a zip archive (current format) or a pickle stream
    (protocol 2+ opcode, the legacy format). Random bytes or text must not be reported as a pickle payload."""
    import zipfile

    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as err:
        raise CLIError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
    return head == b"\x80" or zipfile.is_zipfile(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CLIError(f"{path}: unreadable checkpoint config ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise CLIError(f"{path}: checkpoint config must be a JSON object with a 'model' name")
    return meta


def _build(path: Path, meta: dict[str, Any], state: dict[str, Any], expected: str | None) -> tuple[nn.Module, Any]:
    from recon.models import build_model

    name = meta["model"]
    if expected is not None and name != expected:
        raise CLIError(f"{path}: checkpoint holds a {name!r} model but --model {expected} was asked for")
    try:
        model = build_model(name, meta.get("model_config"), state)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CLIError(f"{path}: weights do not fit the {name!r} model of the checkpoint config ({err})") from None
    train_config = meta.get("train_config")
    data = train_config.get("data") if isinstance(train_config, dict) else meta.get("data")
    return model.eval(), _preprocessing(data, path)


def checkpoint_folder(path: Path) -> Path:
    """The checkpoint folder a folder stands for: a `recon train` run folder (``last/`` inside, no weights of its
    own) gives its ``last`` checkpoint, any other folder itself."""
    if path.is_dir() and not (path / "model.safetensors").exists() and (path / "last").is_dir():
        return path / "last"
    return path


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(weights file, config file or None)`` of a checkpoint given as a `recon train` run folder (its ``last``
    checkpoint), a checkpoint folder, a ``.safetensors`` file (config beside it) or a single ``.pt`` / ``.pth`` /
    ``.ckpt`` / ``.bin`` file (config inside it: ``None``).

    Raises:
        CLIError: When the checkpoint or one of its files is missing, naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: checkpoint not found")
    if path.is_dir():
        folder = checkpoint_folder(path)
        weights, config = folder / "model.safetensors", folder / "config.json"
        missing = [file.name for file in (weights, config) if not file.is_file()]
        if missing:
            raise CLIError(
                f"{folder}: {' and '.join(missing)} missing; expected a `recon train` run folder (with last/) or a "
                "checkpoint folder with model.safetensors and config.json"
            )
        return weights, config
    if path.suffix == ".safetensors":
        # `recon train` writes config.json beside model.safetensors; the shipped weights (recon/weights) pair
        # <stem>.safetensors with <stem>.json, several to a folder, so the file's own <stem>.json comes first
        candidates = (path.with_suffix(".json"), path.parent / "config.json")
        config = next((file for file in candidates if file.is_file()), None)
        if config is None:
            raise CLIError(
                f"{path}: neither {candidates[0]} nor {candidates[1]} exists; a .safetensors checkpoint needs its "
                "config (model name and config) beside it, as <stem>.json or the config.json `recon train` writes"
            )
        return path, config
    return path, None


def load_checkpoint_model(path: str | os.PathLike, expected: str | None = None) -> tuple[nn.Module, Any]:
    """Load a model from a checkpoint, never unpickling arbitrary objects.

    Accepted layouts:

    * a folder written by :func:`recon.training.save_checkpoint` (``model.safetensors`` + ``config.json``);
    * a ``.safetensors`` file with its ``<stem>.json`` (as the shipped weights) or a ``config.json`` beside it;
    * a ``.pt`` / ``.pth`` / ``.ckpt`` file holding ``{"model": name, "model_config": {...}, "state_dict": {...}}``,
      loaded with ``torch.load(weights_only=True)``; anything needing a full unpickler is refused.

    The pre-processing comes from the ``data`` section of the training config stored with the weights
    (``train_config.data``, as ``recon train`` writes it), else the defaults.

    Args:
        path: The checkpoint.
        expected: Model name the caller asked for; a different model in the checkpoint is an error.

    Returns:
        ``(model, recon.inference.Preprocessing)``.

    Raises:
        CLIError: Naming the file and what is wrong.
    """
    import torch
    from safetensors.torch import load_file

    path, config = checkpoint_files(path)
    if path.suffix == ".safetensors" and config is not None:
        meta = _read_json(config)
        try:
            state = load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own error type for bad headers / truncation
            raise CLIError(f"{path}: not a valid safetensors file ({type(err).__name__}: {err})") from None
        return _build(path, meta, state, expected)
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        if not _looks_like_torch_file(path):
            raise CLIError(
                f"{path}: not a checkpoint (neither a safetensors file nor a torch file); expected a `recon train` "
                "folder, a .safetensors file or a torch.save'd .pt / .pth / .ckpt / .bin file"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's safe unpickler says "Weights only load failed" when it meets a forbidden object; other
            # unpickling errors mean the bytes are not a pickle at all
            if "weights only" in str(err).lower():
                raise _refuse_pickle(path) from None
            raise CLIError(f"{path}: not a checkpoint (neither a safetensors file nor a torch file)") from None
        except Exception as err:  # not a zip / truncated / corrupt
            raise CLIError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), str) or "state_dict" not in obj:
            raise CLIError(f"{path}: expected a dict with 'model', 'model_config' and 'state_dict' entries")
        return _build(path, obj, obj["state_dict"], expected)
    raise CLIError(f"{path}: unknown checkpoint format (expected a folder, .safetensors, .pt, .pth or .ckpt)")

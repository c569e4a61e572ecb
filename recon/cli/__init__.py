"""The ``recon`` command line: ``recon <command> [options]`` (also ``python -m recon``).

Each command is a module ``recon.cli.<name>`` exposing ``HELP`` (one line), ``DESCRIPTION`` and ``EXAMPLES`` (text
for ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported,
so a command whose module is missing from an installation is listed as unavailable instead of breaking the others.

User errors (bad files, bad options, unwritable folders) end with one ``recon <command>: error: ...`` line and a
non-zero exit status, never a traceback; ``--debug`` shows the traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import signal
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

from recon.cli._common import CLIError, error_line

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "synth": "write a synthetic fastMRI-style dataset",
    "train": "train a model from a YAML config (works under torchrun)",
    "predict": "reconstruct undersampled files with a model or a classical baseline",
    "evaluate": "SSIM / PSNR / NMSE of predictions against targets (fastMRI definitions)",
    "figure": "PNG panels: target, zero-filled, reconstruction(s), error maps",
    "demo": "synthesise, reconstruct at 4x and 8x with every method, evaluate, draw figures",
}

_EPILOG = """\
examples:
  recon demo                                   # everything end to end on a small synthetic dataset
  recon synth data/ --volumes 4 --slices 8
  recon predict data/ out/ --model cirim --mask equispaced --acceleration 8 --center-fraction 0.04
  recon evaluate --targets data/ --predictions out/ --csv metrics.csv

run `recon <command> --help` for the options and examples of each command.
"""


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"recon.cli.{name}") is not None


def _load(name: str) -> ModuleType | None:
    if not _available(name):
        return None
    return importlib.import_module(f"recon.cli.{name}")


def _top_parser() -> argparse.ArgumentParser:
    lines = [
        f"  {name:<10} {text}" + ("" if _available(name) else " (not available)") for name, text in COMMANDS.items()
    ]
    parser = argparse.ArgumentParser(
        prog="recon",
        description="Accelerated MRI reconstruction with recurrent models (CIRIM, RIM, RecurrentVarNet).\n\n"
        "commands:\n" + "\n".join(lines),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    parser.add_argument("--version", action="store_true", help="print the recon version and exit")
    parser.add_argument("command", nargs="?", metavar="command", help="one of: " + ", ".join(COMMANDS))
    return parser


def _command_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    examples = getattr(module, "EXAMPLES", "")
    parser = argparse.ArgumentParser(
        prog=f"recon {name}",
        description=getattr(module, "DESCRIPTION", None) or getattr(module, "HELP", COMMANDS.get(name, "")),
        epilog=f"examples:\n{examples.rstrip()}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, torchrun stopping its workers) raised as an interrupt, so that ``finally`` blocks remove
    temporary files instead of the process dying mid-write."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run ``recon`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    top = _top_parser()
    if argv and argv[0] == "--version":
        from recon import __version__

        print(f"recon {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, command_argv = argv[0], argv[1:]
    if name.startswith("-"):
        top.error(f"unknown option {name!r}; options go after the command (`recon <command> --help`)")
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module = _load(name)
    if module is None:
        error_line(name, f"`recon {name}` is not available in this installation (module recon.cli.{name} is missing)")
        return 1
    args = _command_parser(name, module).parse_args(command_argv)
    try:
        with _sigterm_as_interrupt():
            return int(module.run(args) or 0)
    except CLIError as err:
        error_line(name, str(err))
        return err.code
    except KeyboardInterrupt as err:
        error_line(name, "interrupted; finished outputs are kept, rerun the same command to resume")
        return 143 if isinstance(err, _Terminated) else 130
    except Exception as err:  # a bug or an environment problem: one line unless --debug
        if debug:
            raise
        error_line(name, f"unexpected {type(err).__name__}: {err} (rerun with `recon --debug {name} ...` for details)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

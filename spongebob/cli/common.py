# Hand-written module (not generated from a notebook).
"""What every command of the command line shares: one-line errors, input and output checks, the
tokenizer rule of the seed presets, the bad-line and device flags.

Errors: a command raises `CliError` (or ``ValueError``, ``OSError``: the package's own one-line
errors); `spongebob.cli.main` prints ``spongebob: error: MESSAGE`` on one line and exits with
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Vocabulary size of the original's tokenizer: every seed preset's model is built for it.
SEED_VOCAB = 6400


class CliError(ValueError):
    """A problem with the command's input, printed as one line (exit status 2)."""


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line: an ``OSError`` as ``PATH: what happened``."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
        if e.filename2 is not None:
            text += f" (and {e.filename2})"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


# ------------------------------------------------------------------------ inputs and outputs
def input_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file, else `CliError` naming it."""
    if not path.exists():
        raise CliError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise CliError(f"{path}: is a folder, not a file ({what})")
    if not os.access(path, os.R_OK):
        raise CliError(f"{path}: not readable ({what})")
    return path


def input_path(path: Path, what: str) -> Path:
    """``path`` if it is an existing file or folder, else `CliError` naming it."""
    if not path.exists():
        raise CliError(f"{path}: no such file or folder ({what})")
    return path


def _writable_parent(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(f"{parent}: is a file, so {path} cannot be created ({what})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"{parent}: not writable, so {path} cannot be created ({what})")


def output_dir(path: Path, what: str) -> Path:
    """``path`` usable as an output folder (existing and writable, or creatable)."""
    if path.exists():
        if not path.is_dir():
            raise CliError(f"{path}: exists and is a file, not a folder ({what})")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CliError(f"{path}: folder not writable ({what})")
        return path
    _writable_parent(path, what)
    return path


def output_file(path: Path, what: str) -> Path:
    """``path`` usable as an output file (absent or a file, in a writable or creatable folder);
    its folder is created."""
    if path.is_dir():
        raise CliError(f"{path}: is a folder, not a file ({what})")
    if path.exists() and not os.access(path, os.W_OK):
        raise CliError(f"{path}: not writable ({what})")
    _writable_parent(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------- tokenizers
def is_seed(preset: str | None) -> bool:
    """The presets that build the original's model (vocabulary 6400) for the real data."""
    return bool(preset) and preset.startswith("seed")


def load_tokenizer_arg(path: Path):
    """`load_tokenizer` of a ``--tokenizer`` folder, every failure as one line naming it."""
    from spongebob.tokenizer import load_tokenizer

    if not path.exists():
        raise CliError(f"{path}: no such tokenizer folder (--tokenizer)")
    try:
        return load_tokenizer(path)
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: not a readable tokenizer folder ({one_line(e)})") from e
    except Exception as e:  # the tokenizers library raises a bare Exception on a bad file
        raise CliError(f"{path}: not a readable tokenizer folder ({one_line(e)})") from e


def resolve_tokenizer(tokenizer: Path | None, preset: str | None, vocab_size: int | None = None):
    """``(tokenizer, name)`` for a command's ``--tokenizer`` and ``--preset``.

    The seed presets never fall back to the course tokenizer (2,048 tokens of the embedded world:
    the real, mostly Chinese data would become 3-4x the tokens and a model built for the wrong
    vocabulary): they need ``--tokenizer`` (the original's folder works). Other presets default to
    the course tokenizer. ``vocab_size`` (the model's) must equal the tokenizer's size; a mismatch
    is one line naming both.
    """
    if tokenizer is None:
        if is_seed(preset):
            raise CliError(
                f"--preset {preset} needs --tokenizer DIR: a {SEED_VOCAB}-token tokenizer (the "
                "original's folder, `spongebob tokenizer train --vocab-size 6400`, or the one "
                "`spongebob pipeline --preset seed` trains); the course tokenizer (2048 tokens) "
                "is for the embedded world only"
            )
        from spongebob.world import course_tokenizer

        tok, name = course_tokenizer(), "course tokenizer"
    else:
        tok, name = load_tokenizer_arg(tokenizer), str(tokenizer)
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise CliError(
            f"{name} has {tok.vocab_size} tokens but the {preset} model preset is built for "
            f"{vocab_size}; pass a {vocab_size}-token --tokenizer"
        )
    return tok, name


# ------------------------------------------------------------------------------ shared flags
def add_bad_lines_args(p: argparse.ArgumentParser, preset_decides: bool = False) -> None:
    """``--skip-bad-lines`` / ``--max-bad-fraction`` of every command that reads JSONL; with
    ``preset_decides`` (the pipeline: seed skips by default) also ``--strict``, and the
    default of ``skip_bad_lines`` is None."""
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        default=None if preset_decides else False,
        help="skip malformed lines (counted, listed in meta.json) instead of stopping"
        + (" (the seed preset's default)" if preset_decides else ""),
    )
    if preset_decides:
        p.add_argument(
            "--strict",
            dest="skip_bad_lines",
            action="store_false",
            help="stop at the first malformed line (the tiny preset's default)",
        )
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.001,
        help="when skipping: stop when more than this share of the lines is bad "
        "(default 0.001, 0.1 %%)",
    )


def bad_lines_kwargs(args: argparse.Namespace) -> dict:
    """The bad-line options to pass on (nothing when they are the package's defaults)."""
    frac = args.max_bad_fraction
    if not 0 <= frac <= 1:
        raise CliError(f"--max-bad-fraction must be between 0 and 1, got {frac}")
    kw: dict = {}
    if args.skip_bad_lines:
        kw["skip_bad_lines"] = True
    if frac != 0.001:
        kw["max_bad_fraction"] = frac
    return kw


DEVICES = ("auto", "cpu", "cuda", "mps")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto (default): CUDA, then Apple MPS (fp32, untested here), then the CPU",
    )


def device_arg(args: argparse.Namespace):
    """The ``torch.device`` of ``--device`` (`spongebob.runtime.resolve_device`), one-line errors."""
    from spongebob.runtime import resolve_device

    return resolve_device(args.device)


def finish_distributed() -> None:
    """Leave the process group a `torchrun` command joined (no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

"""The few helpers every stage shares: one-line errors, atomic outputs, reproducible npz files."""
from __future__ import annotations

import argparse
import contextlib
import os
import zipfile
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


class KwsError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `target` (file or folder) to write into; on success it
    replaces `target` in one rename, on error it is removed and `target` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if not tmp_target.exists():
            raise KwsError(f"{target}: nothing was written")
        if target.is_dir() and not target.is_symlink():
            old = tmp / ".old"
            target.rename(old)  # rename away first: a folder cannot be replaced in place
            tmp_target.rename(target)
        else:
            os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the script's docstring as written and shows each option's default (unless its
    help already says what the default is, e.g. "default: params bins.split")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main(); a KwsError becomes one line on stderr and exit status 1."""
    try:
        main()
    except KwsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Like np.savez, but with fixed zip timestamps so equal arrays give equal bytes
    (np.savez stamps the clock time, which would change every DVC hash)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)

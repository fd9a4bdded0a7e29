"""The faults a long job meets, each turned into one line and a state the same command resumes from.

- **Two processes on one folder** (a grid's run folder, a fine-tuning's ``--out``): ``folder_lock`` holds
  ``.FOLDER.kinject-lock`` beside it (``filelock``: an OS lock, released when its holder dies, so a killed run never leaves
  it stale); the second process refuses in one line naming the holder, or waits for it (``--wait``).
- **A full disk**: ``disk_full(error)`` recognises it whichever library was writing (an ``OSError`` ENOSPC/EDQUOT,
  safetensors' ``StorageFull``, torch's failed stream writer), and ``DiskFullError`` says where, how much is free and
  what the write needs. Every artefact is written under a temporary name and renamed, so nothing half-written is
  ever taken for finished: free space and run the same command again.
- **SIGTERM** (a cancelled CI job, ``kill``, a scheduler's time limit): ``sigterm_as_interrupt`` makes it behave as
  Ctrl-C, so ``finally`` blocks run, staging files are removed and the CLI prints one line, instead of the process
  vanishing mid-write.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lm_eval_kinject.errors import KinjectError

__all__ = ["FolderBusyError", "DiskFullError", "folder_lock", "disk_full", "disk_full_error", "sigterm_as_interrupt",
           "human_bytes"]

LOCK_SUFFIX = ".kinject-lock"


class FolderBusyError(KinjectError):
    """Another process holds the folder."""


class DiskFullError(KinjectError):
    """The disk filled while writing; nothing half-written was kept."""


@contextmanager
def folder_lock(folder: Path, what: str, wait: bool = False, part: str | None = None,
                lock_dir: Path | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block; ``what`` describes the holder (e.g. "kinject grid");
    ``part``: a lock of one part of the folder only (a grid's ``--models`` share, which may run beside another);
    ``lock_dir``: where the lock file lives (default: beside the folder)."""
    from filelock import FileLock, Timeout

    folder = Path(folder).absolute()
    # beside the folder, not in it: a run that replaces its folder (--overwrite) must not drop the lock with it
    lock_dir = Path(lock_dir) if lock_dir is not None else folder.parent
    lock_dir.mkdir(parents=True, exist_ok=True)
    tag = "" if part is None else "." + "".join(c if c.isalnum() or c in "-_" else "_" for c in part)
    lock_file = lock_dir / f".{folder.name}{tag}{LOCK_SUFFIX}"
    lock, owner = FileLock(str(lock_file)), lock_file.with_name(lock_file.name + ".owner")
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        try:
            holder = owner.read_text(encoding="utf-8").strip()
        except OSError:
            holder = "another process"
        raise FolderBusyError(f"{folder}: in use by {holder}; wait for it to finish (or pass --wait to wait for "
                              "it); two processes on one folder would write the same files") from None
    try:
        owner.write_text(f"{what} (pid {os.getpid()} on {socket.gethostname()}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n", encoding="utf-8")
        yield
    finally:
        try:
            owner.unlink()
        except OSError:
            pass
        lock.release()


_FULL_MARKERS = ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded",
                 "PytorchStreamWriter failed writing file")


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a full disk, whichever library was writing."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(error) for marker in _FULL_MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return False


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def disk_full_error(folder: Path, writing: str, needed: int | None = None) -> DiskFullError:
    """The one line for a full disk under ``folder`` while writing ``writing`` (``needed``: bytes it takes)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = f"; it needs about {human_bytes(needed)}" if needed else ""
    return DiskFullError(f"no space left on the device of {folder} while writing {writing} ({human_bytes(free)} free"
                         f"{need}); nothing half-written was kept: free space and run the same command again, "
                         "finished work is reused")


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (as Ctrl-C does)."""
    signal.signal(signal.SIGTERM, _interrupt)

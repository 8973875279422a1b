"""One run per output folder: a lock file that names the run holding it.

Two runs writing into one OUTPUT_DIR would compute everything twice (same
spec) or interleave their outputs (different specs). :class:`OutputLock`
keeps ``OUTPUT_DIR/.fmri-pain.lock``, a JSON record of the holder (host,
PID, start time, command), created and removed under a short ``flock``
(:class:`filelock.FileLock` on ``.fmri-pain.lock.guard``) so that two
contenders never both take it.

A lock is *stale*, and is taken over with a warning, when its holder ran on
this host and that process is gone (or the PID now belongs to a younger
process), or when it ran on another host and its record has not been
refreshed for :data:`STALE_AFTER_S` seconds: the holder touches the record
every :data:`HEARTBEAT_S` seconds, so only a dead run stops doing so. The
record's mtime is set by the file system that the hosts share.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from fmri_pain._version import __version__
from fmri_pain.bids.derivatives import write_json
from fmri_pain.errors import InputError

LOGGER = logging.getLogger(__name__)

LOCK_NAME = ".fmri-pain.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 6 * 3600.0
"""Another host's lock without a heartbeat for this long is stale."""


class OutputLocked(InputError):
    """Another live run holds the lock of the output folder."""


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 -- no such process, no psutil, no permission
        return None


def _alive(pid: int, started: float | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    now_started = _process_start(pid)
    # The PID was reused by a process that started after the lock's holder.
    return not (started is not None and now_started is not None and now_started > started + 1.0)


class OutputLock:
    """An exclusive, host-and-PID-naming lock on an output folder.

    Parameters
    ----------
    folder : path
        The output folder (created if needed).
    command : str, optional
        What the holder runs (shown to a second run).
    stale_after : float
        Seconds without a heartbeat after which another host's lock is stale.
    heartbeat : float
        Seconds between refreshes of the lock record (0: none).

    Examples
    --------
    >>> with OutputLock(out, command="fmri-pain bids out participant"):  # doctest: +SKIP
    ...     run()
    """

    def __init__(self, folder: Path | str, *, command: str | None = None,
                 stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.token = uuid.uuid4().hex
        self.taken_over: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _guard(self) -> FileLock:
        return FileLock(str(self.folder / f"{LOCK_NAME}.guard"), timeout=30)

    def read(self) -> dict[str, Any] | None:
        """The holder's record, ``{}`` when unreadable, None when unlocked."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"], holder.get("pid_started"))
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return True
        return age > self.stale_after

    def acquire(self) -> OutputLock:
        """Take the lock, or raise :class:`OutputLocked` naming the run that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with self._guard():
                holder = self.read()
                if holder is not None:
                    if not self._is_stale(holder):
                        raise OutputLocked(
                            f"another fmri-pain run writes into this folder: host "
                            f"{holder.get('host', '?')}, PID {holder.get('pid', '?')}, since "
                            f"{holder.get('started', '?')} ({holder.get('command', '?')}); wait for "
                            f"it to end, or use another OUTPUT_DIR", path=self.folder)
                    self.taken_over = holder
                    LOGGER.warning(
                        "%s: taking over the stale lock of a run that ended without releasing "
                        "it (host %s, PID %s, since %s)", self.folder, holder.get("host", "?"),
                        holder.get("pid", "?"), holder.get("started", "?"))
                write_json({
                    "host": socket.gethostname(), "pid": os.getpid(),
                    "pid_started": _process_start(os.getpid()),
                    "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": self.command[:500], "token": self.token, "version": __version__,
                }, self.path)
        except Timeout as exc:
            raise OutputLocked("timed out waiting for the lock guard", path=self.folder) from exc
        if self.heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, name="fmri-pain-lock", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Remove the lock record if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, Timeout), self._guard():
            holder = self.read()
            if holder and holder.get("token") == self.token:
                self.path.unlink()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""One writer per prediction store: an exclusive lock file next to the store.

The lock is the file ``.<name>.lock`` beside the store ``<name>`` (beside, not inside: a new store is built in
``.<name>.partial`` and renamed into place, and ``overwrite`` deletes the store folder, so a file inside it could
not guard creation or replacement). The writer holds an exclusive ``flock`` on it for the whole run and writes
its pid, host name and start time into it:

* a second writer (another process, or another call in the same process) fails at once with
  :class:`StoreLockedError`, naming the store and the holder;
* the lock is released (file removed, ``flock`` dropped) on normal exit, on an error and on Ctrl-C; a process
  killed outright (``kill -9``) loses its ``flock`` with it, and the file it leaves names a dead pid: the next
  writer on this host reports it (:class:`StaleLockWarning`) and takes the lock over;
* a leftover file naming another host is not taken over (this host cannot tell whether that run is alive): the
  error says to delete the file once no run is active there.

The kernel decides liveness (a held ``flock`` dies with its process), so taking over a stale lock is race-free:
two writers starting at once never both hold it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbio.errors import UserError

__all__ = ["StaleLockWarning", "StoreLock", "StoreLockedError", "acquire_store_lock", "lock_path"]


class StoreLockedError(UserError, RuntimeError):
    """Another run is writing (or may be writing) the prediction store."""


class StaleLockWarning(UserWarning):
    """A lock left by a run that was killed was taken over."""


def lock_path(store: str | os.PathLike) -> Path:
    """The lock file of the store ``store``: ``.<name>.lock`` in the same folder."""
    path = Path(store)
    return path.with_name(f".{path.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a run whose details are not written yet"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"


@dataclass
class StoreLock:
    """A held store lock; :meth:`release` (or the context manager) gives it back. Releasing twice is harmless.

    Attributes:
        store: the prediction store path.
        path: the lock file.
        holder: what was written into the lock file (pid, host, started, store).
        taken_over: the holder record of a stale lock this one replaced (``None`` if the file was free).
    """

    store: Path
    path: Path
    holder: dict[str, Any]
    taken_over: dict[str, Any] | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and drop the ``flock``."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.path)  # while still locked: a waiting writer sees the new file or none
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_store_lock(store: str | os.PathLike) -> StoreLock:
    """Take the exclusive write lock of the prediction store ``store`` (see the module docstring).

    Args:
        store: the prediction store folder (it need not exist yet; its parent folder is created).

    Returns:
        The held :class:`StoreLock`.

    Raises:
        StoreLockedError: another live run holds the lock, or a leftover lock names another host.
        ValueError: the lock file cannot be created (an unwritable location).
    """
    import fcntl

    store = Path(store)
    path = lock_path(store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{store}: cannot write the prediction store there ({err.strerror or err})") from err
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"{store}: cannot write the prediction store there ({err.strerror or err})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ValueError(f"{store}: cannot lock {path} ({err.strerror or err})") from err
            pid = holder.get("pid")
            dead = isinstance(pid, int) and holder.get("host") == socket.gethostname() and not _pid_alive(pid)
            hint = " (that pid has exited: a child process it started may still hold the lock)" if dead else ""
            raise StoreLockedError(
                f"{store}: another prediction is writing this store: {_describe(holder)}{hint}; lock file {path}. "
                "Wait for it to finish or stop it (Ctrl-C stops it resumably), then rerun"
            ) from None
        try:  # the file may have been released (unlinked) between our open and our flock: retry on the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        break
    else:  # pragma: no cover - only under a storm of concurrent writers
        raise StoreLockedError(f"{store}: could not take the lock {path} (it keeps changing); retry")
    previous = _read_holder(fd)
    if previous and previous.get("host") not in (None, socket.gethostname()):
        os.close(fd)
        raise StoreLockedError(
            f"{store}: the lock file {path} names a run on another host ({_describe(previous)}); this host cannot "
            f"tell whether it still runs. If it does not, delete {path} and rerun"
        )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "store": str(store.resolve()),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        raise ValueError(f"{store}: cannot write the lock file {path} ({err.strerror or err})") from err
    lock = StoreLock(store, path, holder, previous or None, fd)
    if previous:
        pid = previous.get("pid")
        state = "has exited" if isinstance(pid, int) and not _pid_alive(pid) else "no longer holds it"
        warnings.warn(
            f"{store}: took over a stale lock ({_describe(previous)}; that process {state}: it was killed or "
            "crashed); the store keeps what that run finished",
            StaleLockWarning,
            stacklevel=2,
        )
    return lock

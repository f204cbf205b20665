"""The environment's lock: flock(2) on STATE/ENV/lock, held by a run from start to end.

lock.info names the holder ("ID WHAT by WHO in progress since TIME"); it is empty
only while a run takes or gives back the lock, a moment a contender waits out
rather than report an unknown holder. A probe (status) takes the lock shared, so
probes never see each other as a run.
"""

from __future__ import annotations

import fcntl
import os
import time

UNNAMED = "- another run (starting or finishing)"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Lock:
    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, "lock")
        self.info = os.path.join(state_dir, "lock.info")
        self.fd = -1

    def holder(self) -> str:
        try:
            with open(self.info, errors="replace") as file:
                return file.readline().rstrip("\n")
        except FileNotFoundError:
            return ""

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _try(self, fd: int, mode: int, seconds: float) -> bool:
        return try_flock(fd, mode, seconds)

    def _wait_out_handover(self, fd: int, mode: int) -> bool:
        """While lock.info is empty a run is taking or giving back the lock: up to 3 s."""
        for _ in range(30):
            if self.holder():
                return False
            if self._try(fd, mode, 0.1):
                return True
        return False

    def busy(self):
        """The holder ("ID WHAT ...") while a run holds the lock, else None; never holds it."""
        fd = self._open()
        try:
            if self._try(fd, fcntl.LOCK_SH, 0) or self._wait_out_handover(fd, fcntl.LOCK_SH):
                return None
            return self.holder() or UNNAMED
        finally:
            os.close(fd)

    def take(self):
        """None, holding the lock; or the holder that has it."""
        fd = self._open()
        if self._try(fd, fcntl.LOCK_EX, 0.3) or self._wait_out_handover(fd, fcntl.LOCK_EX):
            self.fd = fd
            return None
        os.close(fd)
        return self.holder() or UNNAMED

    def take_within(self, seconds: float) -> bool:
        """Wait up to SECONDS for the lock (after take() found it held): whether we hold it."""
        fd = self._open()
        if self._try(fd, fcntl.LOCK_EX, seconds):
            self.fd = fd
            return True
        os.close(fd)
        return False

    def name(self, run_id: str, what: str, by: str, now: str) -> None:
        with open(self.info, "w") as file:
            file.write(f"{run_id} {what} by {by or 'unknown'} in progress since {now}\n")

    def release(self) -> None:
        """Give the lock back, named free."""
        self.clear()
        self.close()

    def clear(self) -> None:
        """Name no holder: the run that holds the lock is ending."""
        with open(self.info, "w"):
            pass

    def close(self) -> None:
        """Let go of our hold (a worker we started may still hold it); lock.info as it is."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def try_flock(fd: int, mode: int, seconds: float, pause: float = 0.005) -> bool:
    """flock(2) MODE on FD, trying every PAUSE seconds for up to SECONDS: whether we hold it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)


def hold(state_dir: str, name: str, what: str, by: str, stays: str = "") -> Lock:
    """The environment's lock, taken and named for a verb that changes it briefly
    (maintenance, manage, a restore, teardown); or Refused, busy (75), naming who holds
    it. stays: what the refusal says stays as it is."""
    from . import facts
    from .request import Refused

    lock = Lock(state_dir)
    holder = lock.take()
    if holder is not None:
        advice = f"{stays}: try again when it is done" if stays else "try again when it is done"
        raise Refused(f"busy: {holder.split(' ', 1)[-1]}; {advice}", facts.EXIT_BUSY)
    lock.name(f"{name}-{os.getpid()}", what, by, now_iso())
    return lock

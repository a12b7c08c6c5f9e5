"""Claims: several processes share one workdir and each unit of work is done once.

A process claims a unit by creating its claim file exclusively (O_CREAT | O_EXCL) with host, PID and start time;
while it works, a background thread refreshes the file's modification time (the heartbeat). Another process
that finds the claim leaves the unit to its holder and comes back to it later; it takes the claim over when the
holder is gone: its PID no longer exists on the same host, or its heartbeat is older than `stale_after`
seconds (a holder on another host). Taking over first renames the stale claim to a name unique to the taker,
so of several contenders exactly one wins. `do_units` runs a list of units this way, so identical runs
started together share the work and end with the same results as one run.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60.0


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claim:
    """An exclusive, heartbeated claim on one unit of work, held through a file at `path`."""

    def __init__(self, path: str | os.PathLike, *, heartbeat: float = HEARTBEAT_SECONDS,
                 stale_after: float = STALE_AFTER_SECONDS):
        self.path = pathlib.Path(path)
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self._stop: threading.Event | None = None
        self._token = uuid.uuid4().hex

    def holder(self) -> dict | None:
        """The current holder's record, or None when the unit is not claimed."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}  # being written right now: treat as held

    def is_stale(self) -> bool:
        holder = self.holder()
        if holder is None:
            return False
        if holder.get("host") == socket.gethostname() and "pid" in holder:
            return not process_alive(int(holder["pid"]))
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age > self.stale_after

    def try_acquire(self) -> bool:
        """Claims the unit if nobody holds it, or takes over a stale claim; True when this process holds it."""
        if self.is_stale():
            graveyard = self.path.with_name(f"{self.path.name}.stale-{self._token}")
            try:
                os.rename(self.path, graveyard)  # only one contender's rename succeeds
                graveyard.unlink(missing_ok=True)
                log.info("took over the stale claim %s", self.path)
            except FileNotFoundError:
                pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "token": self._token, "since": time.time()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), daemon=True).start()
        return True

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        if self._stop is None:
            return
        self._stop.set()
        self._stop = None
        holder = self.holder()
        if holder and holder.get("token") == self._token:
            self.path.unlink(missing_ok=True)


def do_units(units: Sequence[tuple[str, pathlib.Path, Callable[[], bool], Callable[[], None]]], *,
             poll: float = 0.5, stale_after: float = STALE_AFTER_SECONDS) -> None:
    """Runs each unit (name, claim path, done(), work()) that is not done, once across processes.

    Units claimed by a live holder are skipped at first and waited for at the end (taking over their claims
    when the holder dies), so the call returns only when every unit is done.
    """
    waiting = []
    for unit in units:
        if not _attempt(unit, stale_after):
            log.info("%s is claimed by another process %s; coming back to it", unit[0], Claim(unit[1]).holder())
            waiting.append(unit)
    while waiting:
        time.sleep(poll)
        waiting = [unit for unit in waiting if not _attempt(unit, stale_after)]


def _attempt(unit, stale_after) -> bool:
    """True when the unit is done (already, or by this call); False when another process holds it."""
    name, path, done, work = unit
    if done():
        return True
    claim = Claim(path, stale_after=stale_after)
    if not claim.try_acquire():
        return False
    try:
        if not done():  # finished by another process between the check and the claim
            work()
    finally:
        claim.release()
    return True

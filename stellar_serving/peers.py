"""What the server processes on one port share (stellar_serving.processes): a slot per process in
shared memory, and each process's view of the others (ReloadModel waits on it)."""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("stellar_serving.peers")

NO_VERSION = -1  # a slot's version before a model loads, or for a version that is not a number


class Slots:
    """What the supervisor and its workers share, one slot per worker index, in shared memory."""

    def __init__(self, context, count: int) -> None:
        self.count = count
        self.metrics_port = context.RawArray("i", count)  # the worker's loopback /metrics port (0: none)
        self.version = context.RawArray("q", count)  # the version it serves (NO_VERSION: none yet)
        self.joined = context.RawArray("b", count)  # 1 while it serves on the port and takes SIGUSR1
        for index in range(count):
            self.version[index] = NO_VERSION


def version_number(version: str) -> int:
    """MLflow registry versions are numbers; anything else cannot be compared across processes."""
    return int(version) if version.isdigit() else NO_VERSION


class Peers:
    """A worker's view of the other processes on its port (used by StellarServer and ReloadModel)."""

    def __init__(self, index: int, slots: Slots, supervisor: int) -> None:
        self.index = index
        self._slots = slots
        self._supervisor = supervisor

    def reload(self) -> None:
        """Ask every process to look the alias up now (the supervisor relays SIGUSR1 to each)."""
        os.kill(self._supervisor, signal.SIGUSR1)

    def served(self, version: str) -> None:
        self._slots.version[self.index] = version_number(version)

    def wait_until_serving(self, version: str, timeout: float) -> bool:
        """True once every joined process serves `version`; False (logged) if some do not within `timeout`."""
        wanted = version_number(version)
        deadline = time.monotonic() + timeout
        while True:
            behind = [i for i in range(self._slots.count)
                      if self._slots.joined[i] and self._slots.version[i] != wanted]
            if not behind or wanted == NO_VERSION:
                return True
            if time.monotonic() >= deadline:
                log.warning("processes %s do not serve version %s yet; they swap when their reload ends",
                            behind, version, extra={"event": "peers_behind", "model_version": version})
                return False
            time.sleep(0.01)

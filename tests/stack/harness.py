"""Real local processes for the production-stack test: PostgreSQL (Debian binaries),
moto's S3 server behind a switchable TCP relay, and plain subprocesses with logs.

Every process is started in its own session (process group) so that stopping it
also stops what it spawned (uvicorn workers, Dagster run workers).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text[-lines:])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, procs=()):
    """Poll `predicate` until it returns something truthy; fail naming `what` (and dead processes)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for proc in procs:
            proc.assert_alive()
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Proc:
    """One long-running command, its output in `<logdir>/<name>.log`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path, cwd: str | Path | None = None):
        self.name, self.cmd, self.env, self.cwd = name, cmd, env, cwd
        self.log = Path(logdir) / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        handle = open(self.log, "ab")
        handle.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(self.cmd)}\n".encode())
        handle.flush()
        self.popen = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=handle, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def assert_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail(self.log)}")

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            self._reap_group()
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self._reap_group()

    def _reap_group(self) -> None:
        # Children (uvicorn workers, run workers) may outlive the leader: SIGKILL the group.
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Postgres:
    """A throw-away PostgreSQL 15 cluster owned by the `postgres` user (initdb refuses root)."""

    def __init__(self, logdir: Path, password: str):
        self.port = free_port()
        self.password = password
        # The pytest tmp dir (0700, root) is not reachable for `postgres`: a folder of its own.
        self.root = Path(tempfile.mkdtemp(prefix="stellar-pg-"))
        self.data = self.root / "data"
        # Its log lives in that folder too (postgres cannot write into root's tmp dir);
        # destroy() copies it to `logdir`.
        self.logdir = Path(logdir)
        self.log = self.root / "postgres.log"
        self.log.touch()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(self.log, user.pw_uid, user.pw_gid)

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{tail(self.log)}")
        return done

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        # Password auth on TCP, as in production (the compose service uses POSTGRES_PASSWORD).
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
        pwfile.unlink()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        # "fast": active sessions are disconnected, as when the database host restarts.
        self.stop("fast")
        self.start()

    def url(self, db: str, user: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                                dbname=db, connect_timeout=5)

    def create_database(self, name: str) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def query(self, db: str, sql: str, params=()) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def destroy(self) -> None:
        self.stop("immediate")
        if self.log.exists():
            shutil.copy(self.log, self.logdir / "postgres.log")
        shutil.rmtree(self.root, ignore_errors=True)


class Relay:
    """A TCP relay in front of a server, which can refuse connections on demand.

    Stopping moto itself would lose its in-memory buckets; refusing connections at
    the relay makes S3 unreachable for every client while the stored objects stay.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._reachable = threading.Event()
        self._reachable.set()
        self._closed = False
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="s3-relay").start()

    def set_reachable(self, reachable: bool) -> None:
        if reachable:
            self._reachable.set()
            return
        self._reachable.clear()
        with self._lock:  # cut connections in flight too
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def close(self) -> None:
        self._closed = True
        self.set_reachable(False)
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._reachable.is_set():
                # RST instead of a clean close: the client sees "connection reset".
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

"""Each job's process forked from one that has imported listferry already.

A job runs ``listferry sync --here NAME`` (or ``listferry export NAME``) in a process of
its own. Started afresh, that process spends most of a small tenant's job before its
run begins: the interpreter, then listferry, its built-in plugins, psycopg and boto3
imported again for every job (about half a second of a core). So a worker starts one
*fork server* instead: a process that imports all of that once and then forks each
job's process, which runs the command as ``python -m listferry`` would.

What a fresh process gave, each fork keeps: it is a process of its own (a crash or a
hang touches no other job), in a session of its own that the worker kills whole at the
job's time limit; it reads the config and loads the plugins it names as it starts, so
a changed config holds from the next job; and it dies with its worker: the fork server
gets SIGKILL when the worker's thread that started it ends (``PR_SET_PDEATHSIG``), and
each job's process when the fork server does. Only the code is the one the worker
started with: restart the workers after an upgrade.

The worker asks for a process over a Unix socket: the command line, the variables to
add to the environment, and the process's stdin, stdout and stderr. Each request
brings a socket of its own on which the fork server answers the process's id, then,
when it ended, its exit code (negative: the signal that killed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, NoReturn

from listferry.cluster import storage

log = logging.getLogger("listferry")

#: What every job's sync (or export) imports, besides the built-in plugins: imported
#: once, by the fork server (by name: the command is run as ``python -m listferry``
#: would run it).
PRELOAD = (
    "listferry.cli",
    "listferry.ops.night",
    "listferry.cluster.sync",
    "listferry.cluster.exporting",
    "listferry.config.shared",
    "psycopg",
    "boto3",
    "boto3.s3.transfer",
    "botocore.config",
)
#: A pid or an exit code on an answer socket.
NUMBER = struct.Struct("q")
#: The largest request: a command line and a few variables.
MAX_REQUEST = 1 << 16


def die_with(parent: int) -> Callable[[], None]:
    """For ``preexec_fn``, or the first thing a fork does: the process gets SIGKILL when
    the thread of ``parent`` that started it ends, and ends at once if that happened."""

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arrange


# --- the worker's side ----------------------------------------------------------------


class Forked:
    """A job's process, as the worker sees it: its ``pid``, its stderr, its end."""

    def __init__(
        self,
        pid: int,
        answers: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        stderr: asyncio.StreamReader,
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._answers, self._socket = answers
        self._stderr = stderr

    async def communicate(self) -> bytes:
        """Wait for the process to end; what it wrote on stderr."""
        err = await self._stderr.read()
        await self.wait()
        return err

    async def wait(self) -> int:
        """The exit code; SIGKILL's when the fork server died (and the process with it)."""
        if self.returncode is None:
            try:
                (self.returncode,) = NUMBER.unpack(await self._answers.readexactly(NUMBER.size))
            except asyncio.IncompleteReadError:
                self.returncode = -signal.SIGKILL
            self._socket.close()
        return self.returncode


class ForkServer:
    """The fork server of this worker: started at the first job, again if it died."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        """The fork server's process id; ``None`` before the first job."""
        return self._process.pid if self._process is not None else None

    def _running(self) -> socket.socket:
        if self._process is None or self._process.poll() is not None or self._control is None:
            self.close()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with(os.getpid()),
                )
            self._control = ours
        return self._control

    async def start(self, argv: Sequence[str], env: dict[str, str]) -> Forked:
        """A process of its own that runs the listferry command line ``argv`` (without
        the program) with ``env`` added to the environment, stdout discarded."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        read_end, write_end = os.pipe()
        request = json.dumps({"argv": list(argv), "env": env}).encode()
        try:
            with open(os.devnull, "rb") as stdin, open(os.devnull, "wb") as stdout:
                fds = [theirs.fileno(), stdin.fileno(), stdout.fileno(), write_end]
                socket.send_fds(self._running(), [request], fds)
        except BaseException:
            ours.close()
            os.close(read_end)
            raise
        finally:
            theirs.close()
            os.close(write_end)
        answers = await asyncio.open_connection(sock=ours)
        stderr = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stderr), os.fdopen(read_end, "rb")
        )
        try:
            (pid,) = NUMBER.unpack(await answers[0].readexactly(NUMBER.size))
        except asyncio.IncompleteReadError:
            answers[1].close()
            raise OSError("the worker's fork server ended before it started the job") from None
        return Forked(pid, answers, stderr)

    def close(self) -> None:
        """End the fork server (it ends when its socket closes); its jobs have ended."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process = None


# --- the fork server ------------------------------------------------------------------


def preload() -> None:
    """Import what every job's sync imports: :data:`PRELOAD` and the built-in plugins
    (those of other packages are imported by the jobs whose config loads them); and read
    S3's models, which every job's storage client needs."""
    names = list(PRELOAD)
    names += [
        ep.module
        for ep in entry_points(group="listferry")
        if ep.dist is not None and ep.dist.name == "listferry"
    ]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # the job says so, in its own words
            log.debug("fork server: %s not imported", name, exc_info=True)
    storage.warm_up()


def serve(control: socket.socket) -> None:
    """Fork a process for each request on ``control`` and answer on the request's socket
    its pid, then its exit code; return when the worker closes ``control``."""
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd is written
    signal.set_wakeup_fd(wakeup_w)
    answers: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as selector:
        selector.register(control, selectors.EVENT_READ)
        selector.register(wakeup_r, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if wakeup_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_r, 4096)
                _reap(answers)
            if control in ready:
                message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 4)
                if not message:
                    return  # the worker closed its end: it is leaving
                parent = os.getpid()
                pid = os.fork()
                if pid == 0:
                    ours = [selector.fileno(), control.fileno(), wakeup_r, wakeup_w]
                    ours += [answer.fileno() for answer in answers.values()]
                    _child(parent, json.loads(message), fds, ours)
                answer = socket.socket(fileno=fds[0])
                for fd in fds[1:]:
                    os.close(fd)
                with contextlib.suppress(OSError):  # the worker gave up on it: it is killed
                    answer.sendall(NUMBER.pack(pid))
                answers[pid] = answer
                _reap(answers)


def _reap(answers: dict[int, socket.socket]) -> None:
    """Answer the exit code of each process that ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        answer = answers.pop(pid, None)
        if answer is not None:
            with contextlib.suppress(OSError), answer:
                answer.sendall(NUMBER.pack(os.waitstatus_to_exitcode(status)))


def _child(parent: int, request: dict[str, Any], fds: list[int], ours: list[int]) -> NoReturn:
    """The job's process: a session of its own, dying with the fork server, the fork
    server's files closed and its signals as a fresh process has them, stdin, stdout and
    stderr as the worker gave them; then the command, and its exit code."""
    code = 1
    try:
        os.setsid()
        die_with(parent)()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in [*ours, fds[0]]:
            os.close(fd)
        for target, fd in enumerate(fds[1:]):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.update(request["env"])
        sys.argv = ["listferry", *request["argv"]]
        try:
            runpy.run_module("listferry", run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        logging.shutdown()
    except BaseException as exc:  # one line for the job's log; the trace only when debugging
        with contextlib.suppress(Exception):
            print(f"listferry: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            if os.environ.get("LISTFERRY_DEBUG"):  # where, for the one debugging it
                import traceback

                sys.stderr.write("".join(traceback.format_exception(exc)))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    """A :class:`SystemExit`'s code as the interpreter would exit with it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str]) -> None:
    """``python -m listferry.cluster.forks FD``: serve the worker on the socket ``FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when its jobs end
    preload()
    with socket.socket(fileno=int(argv[0])) as control:
        serve(control)


if __name__ == "__main__":
    main(sys.argv[1:])

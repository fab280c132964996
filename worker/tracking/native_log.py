"""Keep MediaPipe's native start-up chatter off the terminal.

MediaPipe's C++ side (TFLite, absl) writes "INFO: Created TensorFlow Lite XNNPACK delegate",
"All log messages before absl::InitializeLog()" and per-thread "W0000 ... feedback manager"
lines straight to file descriptor 2 whenever a FaceMesh graph starts: four lines on every
`sync-scorer score`, with no setting to silence them (GLOG_minloglevel no longer applies to
absl). While the tracker runs, descriptor 2 goes through a `grep -v` child process that drops
those known lines and passes every other line on as it comes. A child, not a thread or a
buffer replayed afterwards: native code that ends the process itself (an absl CHECK's abort,
OpenBLAS's exit(1) when memory runs out) used to take its last words with it, and the command
ended with no message at all. Where no grep can be started, the lines are kept in a temporary
file and replayed when the tracker is done.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# one pattern for Python's re and for grep -E (no \d, \w or \s: POSIX ERE has none)
NOISE_PATTERN = (
    r"^(INFO: Created TensorFlow Lite"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW][0-9]{4} [0-9][0-9]:[0-9][0-9]:[0-9]+\.[0-9]+ +[0-9]+ [A-Za-z0-9_]+\.cc:[0-9]+])"
)
NOISE = re.compile(NOISE_PATTERN)


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    fd = 2  # what native code writes to, whatever sys.stderr is (a test's capture, say)
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 at all
        yield
        return
    sys.stderr.flush()
    grep = shutil.which("grep")
    try:
        filt = subprocess.Popen([grep, "-v", "-E", "--line-buffered", NOISE_PATTERN], stdin=subprocess.PIPE,
                                stdout=saved, stderr=subprocess.DEVNULL) if grep else None
    except OSError:
        filt = None
    if filt is None:
        with _replayed_later(fd, saved):
            yield
        return
    assert filt.stdin is not None
    try:
        with _redirected(fd, saved, filt.stdin.fileno()):
            yield
    finally:
        filt.stdin.close()  # the child's input ends: it passes on what is left and exits
        try:
            filt.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck terminal
            filt.kill()


@contextmanager
def _redirected(fd: int, saved: int, target: int) -> Iterator[None]:
    """Descriptor ``fd`` writes to ``target`` inside; ``saved`` (a dup of it) is put back and closed."""
    os.dup2(target, fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


@contextmanager
def _replayed_later(fd: int, saved: int) -> Iterator[None]:
    with tempfile.TemporaryFile() as tmp:
        try:
            with _redirected(fd, saved, tmp.fileno()):
                yield
        finally:
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not is_noise(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)

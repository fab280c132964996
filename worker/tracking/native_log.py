"""Keep MediaPipe's native start-up chatter off the terminal.

MediaPipe's C++ side (TFLite, absl) writes "INFO: Created TensorFlow Lite XNNPACK delegate",
"All log messages before absl::InitializeLog()" and per-thread "W0000 ... feedback manager"
lines straight to file descriptor 2 whenever a FaceMesh graph starts: four lines on every
`sync-scorer score`, with no setting to silence them (GLOG_minloglevel no longer applies to
absl). While the tracker runs, descriptor 2 goes to a temporary file; afterwards every line but
those known ones is written back to stderr, so nothing else is lost.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

NOISE = re.compile(
    r"^(INFO: Created TensorFlow Lite"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \w+\.cc:\d+\])"
)


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
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not is_noise(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)

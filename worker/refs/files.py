"""ROI pixels in a local file named by a ``file://`` URI, only under configured roots.

The path is resolved (symlinks followed, ``..`` collapsed) before the root check, so neither a
symlink nor ``..`` can reach outside the roots. Files hold raw pixels or a .npy array.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from worker.refs.errors import BAD_REF, NOT_FOUND, OUTSIDE_ROOTS, UNREADABLE, WRONG_SIZE, RefError
from worker.refs.pixels import max_object_bytes, pixels_from_bytes

SCHEME = "file"


class FileResolver:
    """``file:///abs/path`` -> pixels, for paths inside ``allowed_roots`` only."""

    def __init__(self, allowed_roots: Iterable[str | os.PathLike[str]] = ()) -> None:
        # Roots resolved once; a root that does not exist yet still counts (resolve non-strict).
        self.allowed_roots: tuple[Path, ...] = tuple(Path(r).expanduser().resolve() for r in allowed_roots)

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.allowed_roots)

    def path_of(self, uri: str) -> Path:
        """The resolved, allowed path of ``uri``, or RefError."""
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise RefError(BAD_REF, f"not a file URI: {uri!r}", scheme=SCHEME)
        if parts.netloc not in ("", "localhost"):
            raise RefError(BAD_REF, f"file URI with a remote host {parts.netloc!r}", scheme=SCHEME)
        raw = unquote(parts.path)
        if not raw.startswith("/") or "\0" in raw:
            raise RefError(BAD_REF, f"file URI path must be absolute: {uri!r}", scheme=SCHEME)
        if not self.allowed_roots:
            raise RefError(OUTSIDE_ROOTS, "no allowed file roots are configured", scheme=SCHEME)
        # Check the path as written first (so a missing file outside the roots reads as outside,
        # not as missing; `..` collapsed), then the real one (a symlink may point out).
        if not self._inside(Path(os.path.normpath(raw))):
            raise RefError(OUTSIDE_ROOTS, f"{raw} is outside the allowed roots", scheme=SCHEME)
        try:
            real = Path(raw).resolve(strict=True)
        except FileNotFoundError as e:
            raise RefError(NOT_FOUND, f"no such file {raw}", scheme=SCHEME) from e
        except (OSError, RuntimeError) as e:  # symlink loop, permissions on a parent
            raise RefError(UNREADABLE, f"cannot resolve {raw}: {e}", scheme=SCHEME) from e
        if not self._inside(real):
            raise RefError(OUTSIDE_ROOTS, f"{raw} resolves to {real}, outside the allowed roots", scheme=SCHEME)
        return real

    def __call__(self, uri: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.path_of(uri)
        limit = max_object_bytes(shape)
        try:
            # O_NOFOLLOW: the checked path's last component must not have become a symlink since.
            # O_NONBLOCK: opening a FIFO (or a device) waits for a writer, on the poll loop's
            # thread; so the open returns at once and the regular-file check below refuses it
            # (regular files read as before).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError as e:
            raise RefError(NOT_FOUND, f"no such file {path}", scheme=SCHEME) from e
        except OSError as e:
            raise RefError(UNREADABLE, f"cannot open {path}: {e}", scheme=SCHEME) from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RefError(UNREADABLE, f"{path} is not a regular file", scheme=SCHEME)
            if st.st_size > limit:
                raise RefError(WRONG_SIZE, f"{path} has {st.st_size} bytes, more than a "
                               f"{'x'.join(map(str, shape))} ROI can take", scheme=SCHEME)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(limit + 1)
        except OSError as e:
            raise RefError(UNREADABLE, f"cannot read {path}: {e}", scheme=SCHEME) from e
        finally:
            os.close(fd)
        return pixels_from_bytes(data, shape, scheme=SCHEME)


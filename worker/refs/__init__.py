"""ROI references -> pixels: inline, POSIX shared memory, file:// (allowed roots only), s3://.

``RoiResolver(...).resolve(roi)`` returns uint8 (H, W) / (H, W, 3) or raises ``RefError``; the
worker counts it and marks the frame missing.
"""

from worker.refs.errors import REASONS, RefError
from worker.refs.resolver import RoiResolver

__all__ = ["REASONS", "RefError", "RoiResolver"]

"""Pure per-session join and windowing of ROI frames and audio chunks (no clock, no Kafka).

``events`` holds the plain inputs/outputs, ``timeline`` the job grid and unit conversions,
``buffers`` the per-session frame and audio stores, ``session`` one session's state machine,
``joiner`` the bounded set of sessions, and ``offsets`` which input offsets may be committed.
"""

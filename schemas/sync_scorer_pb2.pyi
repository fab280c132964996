from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frames(_message.Message):
    __slots__ = ("width", "height", "format", "data", "fps", "frame_start", "present", "context_frames", "occluded")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_START_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OCCLUDED_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    format: str
    data: bytes
    fps: float
    frame_start: int
    present: _containers.RepeatedScalarFieldContainer[bool]
    context_frames: int
    occluded: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ..., data: _Optional[bytes] = ..., fps: _Optional[float] = ..., frame_start: _Optional[int] = ..., present: _Optional[_Iterable[bool]] = ..., context_frames: _Optional[int] = ..., occluded: _Optional[_Iterable[bool]] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("sample_rate", "channels", "encoding", "data", "start_sample")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    channels: int
    encoding: str
    data: bytes
    start_sample: int
    def __init__(self, sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[str] = ..., data: _Optional[bytes] = ..., start_sample: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("session_id", "frames", "audio", "block_frames", "window_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    frames: Frames
    audio: Audio
    block_frames: int
    window_ms: int
    def __init__(self, session_id: _Optional[str] = ..., frames: _Optional[_Union[Frames, _Mapping]] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ..., block_frames: _Optional[int] = ..., window_ms: _Optional[int] = ...) -> None: ...

class LipSyncScore(_message.Message):
    __slots__ = ("kind", "frame_start", "frame_end", "start_ms", "end_ms", "score", "offset_ms", "margin", "confidence", "direction", "label", "occluded", "scorer")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FRAME_START_FIELD_NUMBER: _ClassVar[int]
    FRAME_END_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    OCCLUDED_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    frame_start: int
    frame_end: int
    start_ms: int
    end_ms: int
    score: float
    offset_ms: float
    margin: float
    confidence: float
    direction: str
    label: str
    occluded: bool
    scorer: str
    def __init__(self, kind: _Optional[str] = ..., frame_start: _Optional[int] = ..., frame_end: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., score: _Optional[float] = ..., offset_ms: _Optional[float] = ..., margin: _Optional[float] = ..., confidence: _Optional[float] = ..., direction: _Optional[str] = ..., label: _Optional[str] = ..., occluded: bool = ..., scorer: _Optional[str] = ...) -> None: ...

class ClipScore(_message.Message):
    __slots__ = ("offset_ms", "score", "confidence", "direction", "label", "scorer", "windows", "blocks", "notes")
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    offset_ms: float
    score: float
    confidence: float
    direction: str
    label: str
    scorer: str
    windows: _containers.RepeatedCompositeFieldContainer[LipSyncScore]
    blocks: _containers.RepeatedCompositeFieldContainer[LipSyncScore]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, offset_ms: _Optional[float] = ..., score: _Optional[float] = ..., confidence: _Optional[float] = ..., direction: _Optional[str] = ..., label: _Optional[str] = ..., scorer: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[LipSyncScore, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[LipSyncScore, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScorerInfo(_message.Message):
    __slots__ = ("scorer", "sample_rate", "search_margin_ms", "max_offset_ms", "context_frames")
    SCORER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MARGIN_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    scorer: str
    sample_rate: int
    search_margin_ms: float
    max_offset_ms: float
    context_frames: int
    def __init__(self, scorer: _Optional[str] = ..., sample_rate: _Optional[int] = ..., search_margin_ms: _Optional[float] = ..., max_offset_ms: _Optional[float] = ..., context_frames: _Optional[int] = ...) -> None: ...

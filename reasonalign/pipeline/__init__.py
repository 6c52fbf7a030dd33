from reasonalign.pipeline.jsonl import append_jsonl, dumps, read_finished_lines, read_jsonl, write_jsonl
from reasonalign.pipeline.stage import (
    MARKER,
    PipelineError,
    Stage,
    StageContext,
    StageResult,
    read_marker,
    run_pipeline,
    without_off,
)

__all__ = [
    "MARKER",
    "PipelineError",
    "Stage",
    "StageContext",
    "StageResult",
    "append_jsonl",
    "dumps",
    "read_finished_lines",
    "read_jsonl",
    "read_marker",
    "run_pipeline",
    "without_off",
    "write_jsonl",
]

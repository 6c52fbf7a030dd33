from reasonalign.pipeline.jsonl import append_jsonl, dumps, read_finished_lines, read_jsonl, write_jsonl
from reasonalign.pipeline.stage import (
    MARKER,
    PipelineError,
    Stage,
    StageContext,
    StageResult,
    config_slice,
    config_value,
    read_marker,
    run_pipeline,
)

__all__ = [
    "MARKER",
    "PipelineError",
    "Stage",
    "StageContext",
    "StageResult",
    "append_jsonl",
    "config_slice",
    "config_value",
    "dumps",
    "read_finished_lines",
    "read_jsonl",
    "read_marker",
    "run_pipeline",
    "write_jsonl",
]

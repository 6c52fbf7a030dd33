"""Named crash points for the fault-injection test (tests/test_faults.py).

``REASONALIGN_KILL_AT=<point>[:<n>]`` makes the process kill itself with SIGKILL the ``n``-th time
(default the first) it passes ``<point>``, as a power cut or the OOM killer would; unset, a point
costs one dictionary lookup. The points sit where an interruption is most likely to leave
half-written state behind:

``jsonl_append``
    halfway through appending a batch of rows to a resumable JSONL file (a torn last line);
``checkpoint_write``
    while a training checkpoint is being written (its last file, ``trainer_state.json``, missing);
``stage_rename``
    after a stage's ``stage.json`` is written, before its partial directory is renamed.
"""

from __future__ import annotations

import os
import signal

ENV = "REASONALIGN_KILL_AT"
_seen: dict[str, int] = {}


def armed(point: str) -> bool:
    """True when the process is to die at this pass of ``point`` (counts the passes)."""
    spec = os.environ.get(ENV)
    if not spec or spec.split(":")[0] != point:
        return False
    _seen[point] = _seen.get(point, 0) + 1
    return _seen[point] == int(spec.split(":")[1] if ":" in spec else 1)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def point(name: str) -> None:
    """Die here when ``name`` is armed."""
    if armed(name):
        die()

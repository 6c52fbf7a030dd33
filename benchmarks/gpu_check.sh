#!/usr/bin/env bash
# One GPU, about eight minutes: docs/benchmarks.md, "GPU check". Arguments go to gpu_check.py.
exec python "$(dirname "$0")/gpu_check.py" "$@"

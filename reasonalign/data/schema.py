"""Record schemas (documented in docs/data.md) and their validation.

* prompt record: ``{"id", "text", "label", "category", "source"}`` with ``label`` one of
  ``harmful`` (must be refused), ``benign`` (must be answered) or ``borderline`` (sounds risky but
  should be answered; counted with benign in compliance metrics).
* SFT record (TRL conversational prompt-completion): ``{"prompt": [messages], "completion":
  [messages]}``; loss is on the completion only.
* preference record (TRL conversational): ``{"prompt": [messages], "chosen": [messages],
  "rejected": [messages]}``.

Extra keys (``id``, ``label``, ``kind``...) ride along as metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from reasonalign.config import ReasonalignError

LABELS = ("harmful", "benign", "borderline")
ROLES = ("system", "user", "assistant")


class DataError(ReasonalignError, ValueError):
    """Bad input, located: the file, the line (1-based; row for csv) and the field."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file, self.line, self.field, self.message = file, line, field, message
        where = file if line is None else f"{file}, line {line}"
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass
class PromptRecord:
    id: str
    text: str
    label: str
    category: str = "unknown"
    source: str = ""
    attack: str = ""  # jailbreak family when the prompt is a wrapped copy (reasonalign/data/jailbreaks.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def should_refuse(self) -> bool:
        return self.label == "harmful"


def check_label(label: object, file: str, line: int | None, field: str = "label") -> str:
    if not isinstance(label, str) or label.strip().lower() not in LABELS:
        raise DataError(file, line, field, f"label {label!r} is not one of {', '.join(LABELS)}")
    return label.strip().lower()


def prompt_record_from_row(row: dict, file: str, line: int | None) -> PromptRecord:
    """Validate a prompt row ``{"text"|"prompt", "label", ["category", "source", "id"]}``."""
    text_key = "text" if "text" in row else "prompt"
    text = row.get(text_key)
    if not isinstance(text, str) or not text.strip():
        raise DataError(file, line, text_key if text_key in row else "text", "missing or empty prompt text")
    if "label" not in row:
        raise DataError(file, line, "label", "missing field")
    label = check_label(row["label"], file, line)
    return PromptRecord(
        id=str(row.get("id") or f"{file}:{line}"),
        text=text.strip(),
        label=label,
        category=str(row.get("category") or "unknown"),
        source=str(row.get("source") or file),
    )


def _check_messages(value: object, file: str, line: int | None, field: str, last_role: str | None) -> None:
    if not isinstance(value, list) or not value:
        raise DataError(file, line, field, "expected a non-empty list of chat messages")
    for j, m in enumerate(value):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise DataError(file, line, f"{field}[{j}]", 'expected {"role": ..., "content": ...}')
        if m["role"] not in ROLES:
            raise DataError(file, line, f"{field}[{j}].role", f"role {m['role']!r} is not one of {ROLES}")
        if not isinstance(m["content"], str):
            raise DataError(file, line, f"{field}[{j}].content", "content must be a string")
    if last_role and value[-1]["role"] != last_role:
        raise DataError(file, line, field, f"last message must have role {last_role!r}")


def _check_pair_format(row: dict, file: str, line: int | None, keys: tuple[str, ...]) -> bool:
    """TRL's two formats: conversational (lists of messages) or standard (text); every field of a row
    in the same one. Returns True for conversational."""
    for key in keys:
        if key not in row:
            raise DataError(file, line, key, "missing field")
    conversational = not isinstance(row[keys[0]], str)
    for key in keys:
        if isinstance(row[key], str) == conversational:
            raise DataError(file, line, key, "mixes TRL's formats: every field is text, or every field is messages")
        if isinstance(row[key], str) and not row[key].strip() and key == "prompt":
            raise DataError(file, line, key, "empty prompt")
    return conversational


def check_sft_row(row: dict, file: str, line: int | None) -> None:
    if _check_pair_format(row, file, line, ("prompt", "completion")):
        _check_messages(row["prompt"], file, line, "prompt", "user")
        _check_messages(row["completion"], file, line, "completion", "assistant")


def check_preference_row(row: dict, file: str, line: int | None) -> None:
    if not _check_pair_format(row, file, line, ("prompt", "chosen", "rejected")):
        return
    _check_messages(row["prompt"], file, line, "prompt", "user")
    _check_messages(row["chosen"], file, line, "chosen", "assistant")
    _check_messages(row["rejected"], file, line, "rejected", "assistant")

"""`Issue`: one problem found in a dataset, collected rather than raised."""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Issue:
    """A problem with one file. `field` points inside the file, e.g. `shapes[2].points`."""

    severity: str  # "error" | "warning" | "info"
    file: str
    field: str
    message: str
    code: str = ""  # stable machine-readable kind, e.g. "box-out-of-bounds"
    fixable: bool = False  # `validate --fix` can repair it safely

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @classmethod
    def from_error(cls, error, *, severity: str = "error", code: str | None = None, prefix: str = "",
                   suffix: str = "", file=None) -> "Issue":
        """The `Issue` for a caught `DatatoolError`, from its parts (`path`, `field`, `reason`,
        `code`); `prefix`/`suffix` frame the reason ("skipped: ...", "... (excluded)"); `file`
        is used when the error names none."""
        where = error.path or (str(file) if file is not None else "")
        return cls(severity, where, error.field, f"{prefix}{error.reason}{suffix}", code or error.code)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{self.severity}: {where}: {self.message}"


def has_errors(issues) -> bool:
    return any(i.severity == "error" for i in issues)

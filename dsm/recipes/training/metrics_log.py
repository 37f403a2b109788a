"""metrics.csv: one row every `train.log_every` steps."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class MetricsCSV:
    """metrics.csv with a header that grows when a new metric appears (the file is then
    rewritten); on resume the rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict[str, str]] = []
        self.fields: list[str] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.fields = list(reader.fieldnames or [])
                self.rows = [r for r in reader if int(r["step"]) <= resume_step]
        self._rewrite()

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        text_row = {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in row.items()}
        self.rows.append(text_row)
        if new:
            self.fields += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, self.fields).writerow(text_row)

    def _rewrite(self) -> None:
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temp, self.path)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))

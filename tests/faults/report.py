"""The fault suite's figures: each test records them, this script renders them for the README.

Every fault test appends one JSON line to the session's report (the ``fault_report``
fixture: ``fault-report.jsonl`` in pytest's temp dir for the session, or
``$LP_FAULT_REPORT``; never a shared path) and prints it; the session prints the
report's path at the end. Render the latest record of each test as a Markdown table with::

    python -m tests.faults.report PATH
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV_VAR = "LP_FAULT_REPORT"
#: the columns of the table, in order; other figures go to the notes column
COLUMNS = {
    "trials": "Trials",
    "sent": "Sent",
    "accepted": "Accepted (200)",
    "lost": "Lost",
    "duplicated": "Duplicated",
    "torn": "Torn lines",
}
#: figures that are not worth a note in the table (checked by the tests all the same)
HIDDEN = {"test", "fault", "at", "misplaced", "out_of_order"}
#: figures worth a note only when they are not zero
QUIET_ZERO = {"stored_without_200"}


def report_path(session_dir: Path) -> Path:
    """Where a session writes its report: ``$LP_FAULT_REPORT``, else ``session_dir``."""
    return Path(os.environ.get(ENV_VAR) or session_dir / "fault-report.jsonl")


def record(path: Path, test: str, fault: str, **figures: Any) -> dict[str, Any]:
    """Append one test's figures to the report ``path`` and print them (``pytest -s``)."""
    row = {"test": test, "fault": fault, "at": round(time.time(), 3), **figures}
    line = json.dumps(row, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    print(f"fault figures: {line}")
    return row


def latest(path: Path) -> list[dict[str, Any]]:
    """The most recent record of each test, in the order of the faults' names ("1. ...")."""
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["test"]] = row
    return sorted(rows.values(), key=lambda r: str(r["fault"]))


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per fault, the figures that prove it, notes for the rest."""
    head = ["Fault", *COLUMNS.values(), "Notes"]
    rule = ["---", *["---:"] * len(COLUMNS), "---"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        notes = ", ".join(
            f"{k.replace('_', ' ')} {_cell(v)}"
            for k, v in row.items()
            if k not in COLUMNS
            and k not in HIDDEN
            and not isinstance(v, (list, dict))
            and not (k in QUIET_ZERO and v == 0)
        )
        cells = [row["fault"], *(_cell(row.get(k)) for k in COLUMNS), notes]
        out.append("| " + " | ".join(cells) + " |")
    if rows:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(r["at"] for r in rows)))
        out.append("")
        out.append(f"Last run: {when}.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args and not os.environ.get(ENV_VAR):
        sys.stderr.write("error: no report named; pass the path that `make test-faults` printed\n")
        return 2
    path = Path(args[0] if args else os.environ[ENV_VAR])
    if not path.is_file():
        sys.stderr.write(f"error: no fault report at {path}; run `make test-faults` first\n")
        return 1
    print(render(latest(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

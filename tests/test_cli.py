"""The CLI as a person uses it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def tailor(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tailor.cli", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_import_then_list_customers(slice_dir: Path, tmp_path: Path) -> None:
    done = tailor("import", str(slice_dir), data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported:" in done.stdout and "40 customers" in done.stdout
    again = tailor("import", str(slice_dir), data_dir=tmp_path)
    assert "unchanged:" in again.stdout
    listed = tailor("customers", "--limit", "3", "--json", data_dir=tmp_path)
    rows = json.loads(listed.stdout)
    assert len(rows) == 3 and all(r["synthetic"] for r in rows)


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "items.jsonl").write_text('{"id": "A", "title": "Bag"}\n')
    done = tailor("import", str(tmp_path / "in"), data_dir=tmp_path / "data")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "items.jsonl:1" in done.stderr and "nothing was imported" in done.stderr
    assert "hint:" in done.stderr


def test_unknown_customer_names_the_id(slice_dir: Path, tmp_path: Path) -> None:
    tailor("import", str(slice_dir), data_dir=tmp_path)
    done = tailor("why", "no-such-customer", "85123A", data_dir=tmp_path)
    assert done.returncode == 1
    assert "customer 'no-such-customer' not found" in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailor.cli",
            "--debug",
            "import",
            str(tmp_path / "missing"),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr

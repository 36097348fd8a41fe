"""The runner's table: every rail module runs somewhere, each through the one ``Rail`` signature, and each
part of an output is read by the row the table gives it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import agent.support
import guardrails
from guardrails.base import Rail
from guardrails.runner import RAILS, RAILS_BY_PART, part_kind

# The package's shared modules; every other module is one rail.
_SHARED = {"base", "runner"}


def _rail_modules() -> dict[str, ModuleType]:
    return {
        m.name: importlib.import_module(f"guardrails.{m.name}")
        for m in pkgutil.iter_modules(guardrails.__path__)
        if not m.name.startswith("_") and m.name not in _SHARED
    }


def _in_table() -> list[object]:
    return [spec.rail for row in RAILS_BY_PART.values() for spec in row]


def test_every_rail_module_runs_on_some_part() -> None:
    modules = _rail_modules()
    assert modules
    missing = sorted(n for n, m in modules.items() if not any(r is m for r in _in_table()))
    assert not missing, f"rail modules that no row of guardrails.runner.RAILS_BY_PART runs: {missing}"


def test_the_table_runs_only_rail_modules_each_under_its_own_name() -> None:
    modules = _rail_modules()
    assert all(any(r is m for m in modules.values()) for r in _in_table())
    assert sorted(r.name for r in RAILS) == sorted(modules)
    assert all(m.name == n for n, m in modules.items())


def test_every_rail_has_the_one_signature() -> None:
    want = inspect.signature(Rail.check, eval_str=True)
    want = want.replace(parameters=list(want.parameters.values())[1:])  # without ``self``
    for n, m in _rail_modules().items():
        assert inspect.signature(m.check, eval_str=True) == want, n


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ("subject", "subject"),
        ("preheader", "preheader"),
        ("intro", "intro"),
        ("reason:21871", "reason"),
        ("body_text", "body_text"),
        ("body_html", "body_html"),
        ("products", "other"),
        # A part named like a row that is no email part is still read as copy.
        ("explanation", "other"),
    ],
)
def test_each_email_part_is_read_by_its_row(part: str, kind: str) -> None:
    assert part_kind(part) == kind


def test_the_support_rows_are_the_rails_support_applies() -> None:
    # Support applies its rows rail by rail (a finding redacts or withholds there), so the table is kept
    # honest by what the module holds.
    applied = {id(v) for v in vars(agent.support).values() if any(v is r for r in RAILS)}
    rows = {id(s.rail) for kind in ("support_ticket", "support_point") for s in RAILS_BY_PART[kind]}
    assert applied == rows

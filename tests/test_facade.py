"""The facade contract (``tailor.app.facade.Facade``) is met in full by the service and by the HTTP tests'
double: the shell calls every member directly, so neither may lack one or take it differently."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from tailor.app.facade import Facade
from tailor.app.service import Tailor
from tailor.core.settings import Settings
from tests.server import ScriptedTailor

_OPEN: dict[str, Callable[[Settings], Facade]] = {"Tailor": Tailor, "ScriptedTailor": ScriptedTailor}


def _methods() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(Facade).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def test_the_contract_names_what_the_shell_calls() -> None:
    assert set(_methods()) == {
        "now",
        "recommend",
        "email",
        "why",
        "support",
        "ingest",
        "set_consent",
        "forget",
        "health",
        "warm_up",
        "model_status",
        "shadow_eval",
        "refit_in_background",
        "close",
    }
    assert set(Facade.__annotations__) == {"settings", "store"}


@pytest.mark.parametrize("name", sorted(_OPEN))
def test_each_facade_has_every_member_and_takes_the_same_arguments(name: str, tmp_path: Path) -> None:
    facade = _OPEN[name](Settings(data_dir=tmp_path / "data"))
    try:
        assert set(_methods()) <= set(dir(facade))
        for attribute in Facade.__annotations__:
            assert hasattr(facade, attribute), attribute
        for method, wanted in _methods().items():
            got = inspect.signature(getattr(type(facade), method))
            # What the contract passes, by name and kind; an implementation may take more, with defaults.
            for parameter in wanted.parameters.values():
                assert parameter.name in got.parameters, (method, parameter.name)
                assert got.parameters[parameter.name].kind == parameter.kind, (method, parameter.name)
            extra = [p for n, p in got.parameters.items() if n not in wanted.parameters]
            assert all(p.default is not inspect.Parameter.empty for p in extra), (method, extra)
    finally:
        facade.close()

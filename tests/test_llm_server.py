"""The local model's server harness: a server that dies under a test is named, not just refused."""

from __future__ import annotations

import signal

import pytest

from tests.llm_server import exit_text, llm_server


def test_exit_text_names_the_signal() -> None:
    assert exit_text(0) == "exited with 0"
    assert exit_text(3) == "exited with 3"
    assert exit_text(-int(signal.SIGSEGV)) == "killed by SIGSEGV"
    assert exit_text(-999) == "killed by signal 999"


@pytest.mark.slow
@pytest.mark.llm
def test_a_server_that_dies_in_use_is_reported() -> None:
    with (
        pytest.raises(RuntimeError, match="died while in use: killed by SIGKILL"),
        llm_server() as server,
    ):
        server.process.kill()
        server.process.wait()

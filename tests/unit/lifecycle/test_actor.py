"""The audit's actor is the environment's identity, not a free-text CLI option."""

from __future__ import annotations

import getpass
import socket

import pytest
from typer.testing import CliRunner

from raylane.cli import app
from raylane.lifecycle.promotion import default_actor


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_promote_and_rollback_take_no_actor_option(command: str) -> None:
    res = CliRunner().invoke(app, [command, "fraud", "--actor", "mallory", "--reason", "x"])
    assert res.exit_code == 2 and "--actor" in res.output  # no such option


def test_actor_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYLANE_ACTOR", raising=False)
    assert default_actor() == f"{getpass.getuser()}@{socket.gethostname()}"
    monkeypatch.setenv("RAYLANE_ACTOR", "ci:deploy-pipeline#812")
    assert default_actor() == "ci:deploy-pipeline#812"

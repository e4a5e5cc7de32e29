"""Signed promotions: the HMAC, the key from the environment, and a replica's refusal of an
alias moved outside `raylane promote` (fake registry, no MLflow, no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raylane.config import ModelConfig
from raylane.errors import ConfigError
from raylane.lifecycle.approval import (
    NotApproved,
    approval_tag,
    approved_record,
    approver,
    last_approved,
    promotion_key,
    record_tag,
    sign,
    verify,
)
from raylane.serving.hosted import HostedModel
from tests.unit.serving.test_hosted_refusal import COLS, Registry

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYLANE_PROMOTION_KEY", raising=False)
    monkeypatch.delenv("RAYLANE_PROMOTION_KEY_FILE", raising=False)


def test_signature_binds_name_alias_and_version() -> None:
    s = sign(KEY, "fraud", "champion", "3")
    verify(KEY, "fraud", "champion", 3, {approval_tag("champion"): s})
    others = [("churn", "champion", "3"), ("fraud", "challenger", "3"), ("fraud", "champion", "4")]
    for name, alias, version in others:
        with pytest.raises(NotApproved):
            verify(KEY, name, alias, version, {approval_tag(alias): s})
    with pytest.raises(NotApproved, match="does not verify"):
        verify(b"x" * 32, "fraud", "champion", "3", {approval_tag("champion"): s})
    with pytest.raises(NotApproved, match=r"no approval tag.*outside `raylane promote`"):
        verify(KEY, "fraud", "champion", "3", {})


def test_key_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert promotion_key() is None
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        promotion_key()
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", "0123456789abcdef0123")
    assert promotion_key() == b"0123456789abcdef0123"
    f = tmp_path / "key"
    f.write_text("fedcba9876543210fedcba\n")
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY_FILE", str(f))
    with pytest.raises(ConfigError, match="not both"):
        promotion_key()
    monkeypatch.delenv("RAYLANE_PROMOTION_KEY")
    assert promotion_key() == b"fedcba9876543210fedcba"
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="RAYLANE_PROMOTION_KEY_FILE"):
        promotion_key()


def test_without_a_key_nothing_is_checked() -> None:
    assert approver("fraud", "champion", lambda v: {}) is None


def test_a_replica_refuses_an_alias_moved_outside_promote(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", KEY.decode())
    approved = {approval_tag("champion"): sign(KEY, "fraud", "champion", "3")}
    tags: dict[str, dict[str, str]] = {
        "1": {approval_tag("champion"): sign(KEY, "fraud", "champion", "1")},
        "3": approved,
    }
    approve = approver("fraud", "champion", lambda v: tags.get(v, {}))
    assert approve is not None
    reg = Registry()
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    h = HostedModel(cfg, reg.load, reg.resolve, approve=approve)
    before = h.score(COLS)
    reg.columns[2] = ["a", "b"]
    reg.alias = "2"  # moved in the MLflow UI: no approval
    with caplog.at_level("ERROR", logger="raylane.serving"):
        assert h.check() is None
    assert h.version == "1" and h.swaps == []
    assert reg.loaded == [1]  # refused before any download
    assert [r.version for r in h.refusals] == ["2"]
    assert "outside `raylane promote`" in h.refusals[0].reason
    assert "refused to swap fraud v1 -> v2, v1 keeps serving" in caplog.text
    np.testing.assert_array_equal(h.score(COLS)["scores"], before["scores"])
    # a tag copied from an approved version does not verify for this one
    tags["2"] = dict(tags["3"])
    reg.alias = "4"
    reg.columns[4] = ["a", "b"]
    assert h.check() is None
    reg.alias = "2"
    assert h.check() is None and h.version == "1"
    # what `raylane promote` approved is swapped to
    reg.alias = "3"
    swap = h.check()
    assert swap is not None and swap.to_version == "3" and h.version == "3"


def test_the_model_host_wires_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # ModelHost is what a model deployment and the ingress (placement: ingress) both host
    from types import SimpleNamespace

    from raylane.serving.model_host import ModelHost

    server_cls: Any = ModelHost
    me = SimpleNamespace(
        cfg=ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    )
    assert server_cls._approval(me, False) is None  # not asked for
    assert server_cls._approval(me, True) is None  # no key: not checked (logged)
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", KEY.decode())
    assert callable(server_cls._approval(me, True))
    pinned = SimpleNamespace(
        cfg=ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud/3"})
    )
    assert server_cls._approval(pinned, True) is None  # a pinned version never moves


def _signed(tags: dict[str, dict[str, str]], version: str, alias: str = "champion") -> None:
    tags.setdefault(version, {})[approval_tag(alias)] = sign(KEY, "fraud", alias, version)


def test_a_starting_replica_serves_the_last_approved_version_not_the_alias(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", KEY.decode())
    tags: dict[str, dict[str, str]] = {}
    _signed(tags, "3")
    record = {record_tag("champion"): approved_record(KEY, "fraud", "champion", "3")}
    approve = approver("fraud", "champion", lambda v: tags.get(v, {}), lambda: record)
    assert approve is not None
    reg = Registry()
    reg.alias = "1"  # moved in the MLflow UI while no replica ran
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    with caplog.at_level("ERROR", logger="raylane.serving"):
        h = HostedModel(cfg, reg.load, reg.resolve, approve=approve, fallback=approve.fallback)
    assert h.version == "3" and reg.loaded == [3]  # v1 never downloaded
    assert [r.version for r in h.refusals] == ["1"]
    assert "outside `raylane promote`" in h.refusals[0].reason
    assert "refused to swap fraud v3 -> v1, v3 keeps serving" in caplog.text
    assert h.check() is None and reg.loaded == [3]  # not tried again until the alias moves
    reg.alias = "4"
    reg.columns[4] = ["a", "b"]
    _signed(tags, "4")
    swap = h.check()
    assert swap is not None and (swap.from_version, swap.to_version) == ("3", "4")


def test_a_starting_replica_with_nothing_approved_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", KEY.decode())
    cfg = ModelConfig.model_validate({"name": "champion", "uri": "models:/fraud@champion"})
    tags: dict[str, dict[str, str]] = {}
    _signed(tags, "3", alias="challenger")  # approved for another alias only
    forged = {record_tag("champion"): approved_record(b"x" * 32, "fraud", "champion", "2")}
    for record in ({}, forged, {record_tag("champion"): "not json"}):
        approve = approver("fraud", "champion", lambda v: tags.get(v, {}), lambda r=record: r)
        assert approve is not None
        reg = Registry()
        reg.alias = "3"
        with pytest.raises(NotApproved, match="no approval tag for @champion"):
            HostedModel(cfg, reg.load, reg.resolve, approve=approve, fallback=approve.fallback)
        assert reg.loaded == []


def test_the_approval_record_verifies_only_for_its_model_alias_and_key() -> None:
    rec = {record_tag("champion"): approved_record(KEY, "fraud", "champion", "7")}
    assert last_approved(KEY, "fraud", "champion", rec) == "7"
    assert last_approved(b"y" * 32, "fraud", "champion", rec) is None
    assert last_approved(KEY, "churn", "champion", rec) is None
    moved = {record_tag("previous"): rec[record_tag("champion")]}
    assert last_approved(KEY, "fraud", "previous", moved) is None
    assert last_approved(KEY, "fraud", "champion", {}) is None

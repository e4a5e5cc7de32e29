"""`raylane init`: a use case written into a project, its contracts in the project's own
folder (beside the built-in ones), and training that builds serving's columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raylane.config import load_serve_config
from raylane.contracts import (
    BUILTIN_REGISTRY_DIR,
    FileSchemaRegistry,
    ProjectContracts,
    SchemaRegistryError,
    contract_sources,
)
from raylane.errors import ConfigError
from raylane.loading import import_file
from raylane.scaffold import init_usecase


def _cli(*argv: str) -> tuple[int, str]:
    from raylane.cli import app

    res = CliRunner().invoke(app, list(argv))
    return res.exit_code, res.output


def test_init_writes_a_use_case_and_registers_its_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _cli("init", "orders", "--flavor", "xgboost")
    assert code == 0, out
    for rel in (
        "serve_configs/orders.yaml",
        "contracts/schemas/orders.events.avsc",
        "contracts/schemas/orders.scored.avsc",
        "features/orders.py",
        "features/feature_store.yaml",
        "models/orders/prepare.py",
        "models/orders/train.py",
        "models/orders/produce.py",
        "models/orders/world.py",
    ):
        assert (tmp_path / rel).is_file(), rel
    _, cfg = load_serve_config("serve_configs/orders.yaml")
    assert cfg.name == "orders" and cfg.input.key_field == "account_id"
    assert (cfg.input.event_time.field, cfg.input.event_time.unit) == ("occurred_at", "ms")
    assert cfg.models.primary.flavor == "xgboost" and cfg.models.shadows[0].flavor == "sklearn"
    assert cfg.schema_registry.type == "file"
    assert Path(cfg.schema_registry.path) == tmp_path / "contracts" / "registry"
    # the project registry: the built-in subjects with their ids, plus the new ones
    reg = FileSchemaRegistry(tmp_path / "contracts" / "registry")
    builtin = FileSchemaRegistry(BUILTIN_REGISTRY_DIR)
    for subject in builtin.subjects():
        assert reg.latest(subject).id == builtin.latest(subject).id
    assert {"orders.events-value", "orders.scored-value"} <= set(reg.subjects())
    assert "orders.events-value" not in builtin.subjects()  # the package is untouched
    # nothing is overwritten without --force
    code, out = _cli("init", "orders")
    assert code == 1 and "exists already" in out
    with pytest.raises(ConfigError, match="must be lower case"):
        init_usecase("Orders-2", root=tmp_path)


def test_schema_check_and_register_cover_builtin_and_project_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    init_usecase("shop", root=tmp_path)
    code, out = _cli("schema", "check")
    assert code == 0, out
    assert "shop.events-value" in out and "payments.initiated-value" in out
    assert "ingress:shop" in out
    # a breaking change in the project's contract is caught
    path = tmp_path / "contracts" / "schemas" / "shop.events.avsc"
    schema = json.loads(path.read_text())
    for f in schema["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"
    path.write_text(json.dumps(schema))
    code, out = _cli("schema", "check")
    assert code == 1 and "shop.events-value" in out and "incompatible" in out
    code, out = _cli("schema", "register")
    assert code == 1
    # an added optional field registers as v2 in the project registry only
    for f in schema["fields"]:
        if f["name"] == "amount":
            f["type"] = "double"
    schema["fields"].append({"name": "coupon", "type": ["null", "string"], "default": None})
    path.write_text(json.dumps(schema))
    code, out = _cli("schema", "register")
    assert code == 0, out
    assert FileSchemaRegistry(tmp_path / "contracts" / "registry").versions(
        "shop.events-value"
    ) == [1, 2]


def test_a_project_contract_may_not_redefine_a_builtin_one(tmp_path: Path) -> None:
    project = ProjectContracts(tmp_path / "contracts")
    project.schemas.mkdir(parents=True)
    (project.schemas / "model.drift.avsc").write_text("{}")
    with pytest.raises(SchemaRegistryError, match=r"redefines the built-in contract\(s\)"):
        contract_sources(project)


def test_scaffolded_training_builds_the_config_columns_in_both_flavors(tmp_path: Path) -> None:
    init_usecase("shop", root=tmp_path, flavor="sklearn")
    train = import_file(tmp_path / "models" / "shop" / "train.py", "_test_shop_train")
    res = train.train(log=False, n_events=4000, progress=False)
    _, cfg = load_serve_config(tmp_path / "serve_configs" / "shop.yaml")
    cols = cfg.features.columns()
    assert "channel__web" in cols and "channel__unknown" in cols
    champion, challenger = res.models["champion"], res.models["challenger"]
    assert type(champion).__name__ == "FittedSklearnModel"
    assert type(challenger).__name__ == "FittedModel"  # XGBoost
    for m in (champion, challenger):
        assert m.feature_names == cols
        assert list(m.reference.columns) == [*cols, "score", "label"]
        assert 0.5 < m.auc <= 1.0

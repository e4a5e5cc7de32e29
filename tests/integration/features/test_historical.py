"""Point-in-time online features for training (Feast's get_historical_features), in event order."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from raylane.config import load_serve_config
from raylane.features import FeastRepo, apply, write_sources
from raylane.features.historical import historical_online_columns

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FEATURES = load_serve_config(ROOT / "serve_configs" / "fraud.yaml")[1].features


def _users(ids: list[str], risk: float, at: datetime) -> pd.DataFrame:
    ts = pd.Series([at] * len(ids), dtype="datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            "user_id": ids,
            "risk_score": [risk + i / 100 for i in range(len(ids))],
            "avg_amount": [10.0 * (i + 1) for i in range(len(ids))],
            "txn_count_30d": [i for i in range(len(ids))],
            "account_age_days": [100 + i for i in range(len(ids))],
            "event_timestamp": ts,
            "created": ts,
        }
    )


def test_each_event_sees_the_profile_as_it_was_at_its_time(redis_url, tmp_path):
    shutil.copytree(
        ROOT / "features", tmp_path / "repo", ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    repo = FeastRepo.load(
        tmp_path / "repo",
        project=f"rlhist_{tmp_path.name.replace('-', '_')}"[:60],
        redis_url=redis_url,
        registry_path=tmp_path / "registry.db",
    )
    now = datetime.now(UTC).replace(microsecond=0)
    old, new = now - timedelta(hours=3), now - timedelta(hours=1)
    users = pd.concat([_users(["u0", "u1"], 0.1, old), _users(["u0", "u1"], 0.5, new)])
    merchants = pd.DataFrame(
        {
            "merchant_id": ["m0"],
            "category_risk": [0.7],
            "fraud_rate_90d": [0.01],
            "event_timestamp": pd.Series([old], dtype="datetime64[ns, UTC]"),
            "created": pd.Series([old], dtype="datetime64[ns, UTC]"),
        }
    )
    write_sources({"user_profiles": users, "merchant_profiles": merchants}, repo)
    apply(repo)

    def ms(t: datetime) -> int:
        return int(t.timestamp() * 1000)

    # deliberately not in time order: the columns come back in the events' order
    events = [
        {"user_id": "u1", "merchant_id": "m0", "event_time": ms(now - timedelta(minutes=30))},
        {"user_id": "u0", "merchant_id": "m0", "event_time": ms(now - timedelta(hours=2))},
        {"user_id": "u0", "merchant_id": "m9", "event_time": ms(now - timedelta(hours=5))},
        {"user_id": "u7", "merchant_id": "m0", "event_time": ms(now - timedelta(minutes=5))},
        {"user_id": "u0", "merchant_id": "m0", "event_time": ms(now - timedelta(minutes=1))},
    ]
    cols = historical_online_columns(events, FEATURES, repo=repo)
    assert set(cols) == set(FEATURES.columns()) & {c for v in FEATURES.online for c in v.columns()}
    risk = cols["user_risk_profile__risk_score"]
    assert risk[0] == pytest.approx(0.51)  # u1 after the new snapshot
    assert risk[1] == pytest.approx(0.10)  # u0 between the snapshots: the old values
    assert math.isnan(risk[2])  # before any snapshot
    assert math.isnan(risk[3])  # a user the source never had
    assert risk[4] == pytest.approx(0.50)
    assert cols["user_risk_profile__avg_amount"][1] == 10.0
    cat = cols["merchant_profile__category_risk"]
    assert cat[0] == pytest.approx(0.7) and math.isnan(cat[2])  # m9 is unknown

"""The model lifecycle: shadow runs and aggregates, promotion gates, promote/rollback/history
with an audit trail. Builds on :mod:`raylane.registry` (plain MLflow) and the batch core."""

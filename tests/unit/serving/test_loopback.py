"""Local Ray on loopback: ray.init options and Serve's per-replica gRPC bind (no Ray started)."""

from __future__ import annotations

from typing import Any

import pytest


def test_loopback_mode_is_set_for_local_ray_and_undone_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray._private import ray_constants

    from raylane.serving import runtime

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("RAYLANE_RAY_HOST", raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    opts = runtime._loopback_only()
    try:
        assert opts == {"_node_ip_address": "127.0.0.1"}
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        from ray._private.services import get_node_ip_address

        assert get_node_ip_address() == "127.0.0.1"  # what ray.init resolves 127.0.0.1 to
    finally:
        runtime._restore_cluster_mode()
    assert before == ray_constants.ENABLE_RAY_CLUSTER
    import os

    assert var not in os.environ


def test_another_ray_host_opts_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from raylane.serving import runtime

    monkeypatch.setenv("RAYLANE_RAY_HOST", "10.0.0.5")
    assert runtime._loopback_only() == {"_node_ip_address": "10.0.0.5"}
    assert "mode" not in runtime._saved


def test_serve_replica_grpc_binds_loopback_on_a_loopback_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray
    from ray.serve._private import replica as serve_replica

    from raylane.serving._loopback import bind_serve_grpc_to_loopback

    bound: list[str] = []

    def fake_bind(server: Any, address: str) -> int:
        bound.append(address)
        return 1234

    monkeypatch.setattr(serve_replica, "add_port_to_grpc_server", fake_bind)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.1.2.3")
    assert bind_serve_grpc_to_loopback() is False  # a cluster node: left alone
    assert serve_replica.add_port_to_grpc_server is fake_bind
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    assert bind_serve_grpc_to_loopback() is True
    assert bind_serve_grpc_to_loopback() is True  # idempotent: wrapped once
    assert serve_replica.add_port_to_grpc_server(object(), "[::]:0") == 1234
    assert serve_replica.add_port_to_grpc_server(object(), "10.9.9.9:7000") == 1234
    assert bound == ["127.0.0.1:0", "10.9.9.9:7000"]

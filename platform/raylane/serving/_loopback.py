"""Keep Ray Serve's per-replica gRPC server on loopback when the node itself is loopback.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica, bound to ``[::]:0``
(``ray.serve._private.replica``, hard-coded, unauthenticated unless ``RAY_USE_TLS``). On a
local Ray that :func:`raylane.serving.runtime.start_ray` put on 127.0.0.1 that is the one
listener left on every interface, so each replica wraps the bind helper Serve calls and
binds that server to 127.0.0.1 instead. Only then: on a cluster node (any other node address)
nothing changes, because other nodes' replicas must reach it. This reaches into Serve's
private module, so it lives in the Ray seam and says when it cannot apply;
tests/e2e/test_loopback.py fails if a replica listens off loopback again.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["bind_serve_grpc_to_loopback"]

log = logging.getLogger("raylane.serving")

_LOOPBACK = "127.0.0.1"


def bind_serve_grpc_to_loopback() -> bool:
    """In a replica on a loopback node: make Serve bind its gRPC server to 127.0.0.1.

    Returns whether the bind is (now) on loopback; idempotent per process.
    """
    import ray

    if ray.util.get_node_ip_address() != _LOOPBACK:
        return False
    try:
        from ray.serve._private import replica as serve_replica

        original = serve_replica.add_port_to_grpc_server
    except (ImportError, AttributeError):
        log.warning(
            "this Ray Serve has no replica.add_port_to_grpc_server; its per-replica gRPC "
            "server may listen on every interface (check `ss -ltnp`)"
        )
        return False
    if getattr(original, "_raylane_loopback", False):
        return True

    def bind(server: Any, address: str) -> Any:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{_LOOPBACK}:{port}"
        return original(server, address)

    bind._raylane_loopback = True  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = bind
    return True

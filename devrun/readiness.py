"""Readiness probes: gRPC health of a service, Envoy's admin `/ready`, and whether a port is free."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when `address` answers the gRPC health check for `service` with SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def envoy_ready(admin_port: int, timeout: float = 1.0) -> bool:
    """True when Envoy's admin interface reports the server LIVE (listeners bound, clusters loaded)."""
    url = f"http://127.0.0.1:{admin_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed loopback http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def port_free(host: str, port: int) -> bool:
    """True when a server could bind `host:port` now.

    SO_REUSEADDR as the servers set it, so connections in TIME_WAIT from an earlier run do not count
    as "taken"; a listening socket still does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True

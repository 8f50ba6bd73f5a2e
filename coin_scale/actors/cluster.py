"""Joining or starting Ray: the local machine by default, a cluster with --address."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import ray

from coin_scale.errors import ResourceError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RaySession:
    """A Ray connection; `owned` says whether this process started it (and so shuts it down)."""

    address: str | None
    owned: bool

    def close(self) -> None:
        if self.owned and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None = None, *, num_cpus: int | None = None) -> RaySession:
    """`None` starts a local Ray on this machine (or joins `RAY_ADDRESS` when the environment names
    one, as `ray job submit` does); `auto` or `ray://host:10001` joins a cluster.

    A local start is asked for explicitly (`address="local"`): a bare `ray.init()` would instead
    join whatever `/tmp/ray/ray_current_cluster` names, which a `ray start` or a test cluster that
    died without cleaning up leaves behind, and then hang on a dead address or refuse `num_cpus`."""
    if ray.is_initialized():
        return RaySession(address=address, owned=False)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        log.info("joining the Ray cluster at RAY_ADDRESS=%s", address)
    if address is None:
        log.info("starting a local Ray instance (pass --address auto to join a cluster)")
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)  # fmt: skip
    else:
        check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING)
    return RaySession(address=address, owned=True)


ADDRESS_FORMS = "auto, HOST:PORT (a cluster's GCS, e.g. HEAD:6379) or ray://HOST:10001"


def check_reachable(address: str, *, timeout: float = 5.0) -> None:
    """Fail fast, in one line, where `ray.init(address)` would raise a traceback (`auto` with no
    cluster) or wait for minutes (nothing listens at the address): the address must have one of
    the `ADDRESS_FORMS` and something must accept a TCP connection there."""
    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address("auto") or ""
        except ConnectionError:
            raise ResourceError(
                "--address auto: no running Ray cluster was found on this machine (RAY_ADDRESS is "
                "not set and no `ray start` is recorded). Fix: start one with `ray start --head`, "
                "pass its address, or leave --address out to start a local Ray."
            ) from None
    host, port = _host_port(target.removeprefix("ray://"), address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        found = f" (found by --address auto: {target})" if address == "auto" else ""
        raise ResourceError(
            f"--address {address}: no Ray cluster answers at {host}:{port}{found}: {err}. Fix: "
            "check that the cluster is up (`ray status`) and the address and port, or leave "
            "--address out to start a local Ray."
        ) from None


def _host_port(target: str, address: str) -> tuple[str, int]:
    if "://" in target:
        raise UserError(
            f"--address: expected {ADDRESS_FORMS}; got {address!r} (an http:// address is the "
            "dashboard's, for `ray job submit`; a command inside a job passes --address auto)"
        )
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address: expected {ADDRESS_FORMS}; got {address!r}")
    return host.strip("[]"), int(port)


def cpu_gpu_per_replica(replicas: int | None) -> tuple[int, float, int]:
    """(replicas, cpus each, gpus each): one replica per GPU, else one CPU replica using all cores.
    No replica asks for more CPUs than the largest live node has (on a cluster of several small
    nodes a replica could otherwise never be placed)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    node_cpus = [
        int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")
    ]
    largest = max(node_cpus, default=cpus) or 1
    if gpus:
        n = replicas or gpus
        return n, max(1, min(cpus // (2 * n), largest)), 1
    n = replicas or 1
    return n, max(1, min(cpus // n, largest)), 0

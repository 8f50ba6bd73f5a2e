"""Run by tests/test_multinode_faults.py in its own process (Ray's Cluster needs a fresh driver):
on one local multi-node Ray cluster (a head with no CPUs, two one-CPU worker nodes), each named
scenario kills actors on the worker nodes in the middle of their work.

- `replicas PROBE WAREHOUSE`: a dissection with one model replica per worker node; the replica on
  one node is SIGKILLed after the first batch, the one on the other node after the sixth.
- `render`: a RenderPool with one worker per node; after the first image, one worker's actor
  process and the other worker's backend process are SIGKILLed.
- `gateway CACHE`: LLM agents explaining units through a GatewayPool with one actor per worker
  node, against a fake OpenAI server; every gateway actor is SIGKILLed while the server answers
  the fifth request. An identical run without the kill is the reference.
- `sweep DIR`: `run_sweep.py --json` with LLM agents against a fake OpenAI server, the driver's
  node holding no model replica; every model replica is SIGKILLed while the server answers the
  fifth request. An identical run without the kill is the reference.
- `agents CACHE`: LLM agents whose every measurement runs on model replicas, one per worker node
  (the driver's head node has none), gathered into shared passes; the replica on worker0 is
  SIGKILLed after the agents' fourth measurement. An identical run without the kill is the
  reference.

Appends one JSON line per scenario, `{"scenario": name, ...}`, to the file named by
`FAULT_REPORTS` (stdout without it) for the test to check: not stdout, where Ray's core worker
writes its notice of a killed actor straight to the descriptor, once seen inside a report's line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

WORKER = "fault_worker"
"""A custom resource only the worker nodes offer (places the zero-CPU gateway actors there)."""


def processes_on(node: Any) -> set[int]:
    """Pids of every process the node's raylet started (its workers and their children)."""
    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    return {p.pid for p in psutil.Process(raylet).children(recursive=True)}


def node_of(pid: int, nodes: dict[str, Any]) -> str:
    """The name of the node whose raylet started `pid` ('?' if none)."""
    return next((name for name, node in nodes.items() if pid in processes_on(node)), "?")


def actors_named(node: Any, class_name: str) -> list[int]:
    """Pids of the node's actor processes of `class_name` (Ray titles them ray::Class)."""
    found = []
    for pid in processes_on(node):
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if any(class_name in part for part in cmdline):
            found.append(pid)
    return found


def replicas(nodes: dict[str, Any], probe: str, warehouse: str) -> dict[str, Any]:
    """A dissection whose replicas are SIGKILLed, one per node, after batches 1 and 6."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.runtime.dissect import run_dissection

    kills: list[dict[str, Any]] = []
    plan = {1: "worker0", 6: "worker1"}

    def kill(done: int) -> None:
        name = plan.get(done)
        if name and not any(k["node"] == name for k in kills):
            (pid,) = actors_named(nodes[name], "ModelReplica")  # one replica per node
            os.kill(pid, signal.SIGKILL)
            kills.append({"node": name, "pid": pid, "after_batch": done})

    config = DissectConfig(model="resnet18", weights="none", layer="layer4", probe=probe,
                           warehouse=warehouse, top_k=5, batch_size=2, replicas=2)  # fmt: skip
    result = run_dissection(config, progress=False, on_batch=kill)
    return {"kills": kills, "images": result.n_images, "failed": result.n_failed}


def render(nodes: dict[str, Any]) -> dict[str, Any]:
    """Renders with one worker's actor and the other worker's backend SIGKILLed mid-batch."""
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig
    from unity_pool.procedural.backend import encode_png
    from unity_pool.procedural.draw import render as draw
    from unity_pool.sampling import sample_scenes

    scenes = sample_scenes(64, 3, width=64, height=64)
    expected = [encode_png(draw(scene)[0]) for scene in scenes]  # no Ray, no fault
    with RenderPool(RenderPoolConfig(workers=2, batch_size=4, cpus_each=1.0)) as pool:
        pool.wait_ready(timeout=120)
        before = pool.status()
        where = [node_of(s.worker_pid, nodes) for s in before]
        outcomes = pool.iter_outcomes(scenes)
        first = next(outcomes)  # the other batches are in flight on both workers now
        os.kill(before[0].worker_pid, signal.SIGKILL)
        os.kill(before[1].backend.pid, signal.SIGKILL)
        results = [first, *outcomes]
        after = pool.status()
        resubmitted = pool.resubmitted
    datas = [getattr(r, "data", None) for r in results]
    return {
        "requested": len(scenes),
        "returned": len(results),
        "equal": datas == expected,
        "distinct": len(set(datas)),
        "worker_nodes": where,
        "killed_worker_replaced": after[0].worker_pid != before[0].worker_pid,
        "killed_backend_replaced": after[1].backend.pid != before[1].backend.pid,
        "backend_restarts": after[1].backend.restarts - before[1].backend.restarts,
        "resubmitted": resubmitted,
    }


@dataclass
class KillGatewaysAt:
    """The fake server's policy, which SIGKILLs every gateway actor while answering request `at`
    (so at least that request's call is in flight at the kill). The server calls it as each
    request arrives, before its latency, so `in_flight` = arrived minus answered at the kill."""

    inner: Any
    at: int
    server: Any = None
    pids: list[int] = field(default_factory=list)
    seen: int = 0
    killed: list[int] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, view: Any) -> Any:
        with self.lock:
            self.seen += 1
            if self.seen == self.at and not self.killed:
                self.in_flight = self.seen - len(self.server.log)
                for pid in self.pids:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
        return self.inner(view)


def gateways_on_workers(base_url: str, cache: str) -> tuple[Any, Any]:
    """(prepared LLM, GatewayPool): two gateway actors spread over the worker nodes, against the
    fake OpenAI server at `base_url`, with a request cache at `cache`."""
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec
    from coin_scale.explain.llm import LLMExplainerConfig, prepare

    prepared = prepare(
        LLMExplainerConfig(
            provider="openai", model="fake-model", base_url=base_url, requests_per_minute=60000,
            tokens_per_minute=1e12, cache_dir=cache, gateway_actors=2, concurrency=4,
        )  # fmt: skip
    )
    spec = GatewaySpec(config=prepared.gateway_config(), limits=prepared.limits, base_url=base_url)
    assert prepared.api_key is not None
    pool = GatewayPool(spec, prepared.api_key, actors=2, actor_options={
        "resources": {WORKER: 0.01}, "scheduling_strategy": "SPREAD",
    })  # fmt: skip
    return prepared, pool


def _explain(cache: str, at: int | None, nodes: dict[str, Any]) -> dict[str, Any]:
    """Four units explained by ExperimenterPolicy through two gateway actors on the worker nodes;
    with `at`, every gateway actor is killed while the server answers request `at`."""
    from coin_scale.agent import ExperimentTools
    from coin_scale.explain.llm import explain_subjects
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer, Faults
    from tests.test_agent_loop import Redness, _subject
    from unity_pool.tools import LocalRenderer, RenderTools

    subjects = [_subject(Redness(), unit=u) for u in range(4)]
    policy = KillGatewaysAt(ExperimenterPolicy(), at or 0)
    with FakeProviderServer("openai", policy, faults=Faults(latency_s=0.2)) as server:
        policy.server = server
        prepared, pool = gateways_on_workers(server.base_url, cache)
        try:
            policy.pids = pool.pids()
            gateway_nodes = [node_of(pid, nodes) for pid in policy.pids]
            result = explain_subjects(
                prepared, subjects,
                lambda s: ExperimentTools(s, Redness(), RenderTools(renderer=LocalRenderer())),
                run_id="faults", gateways=pool, progress=False,
            )  # fmt: skip
            restarted = pool.pids()
        finally:
            pool.shutdown()
        log = server.log
    outcomes = []
    for o in result.outcomes:
        row = asdict(o)
        row.pop("cost_usd")  # a resent call answered from the cache costs nothing
        row["experiments"] = [
            {k: v for k, v in step.items() if k not in ("cost_usd", "created_at")}
            for step in row["experiments"]
        ]
        outcomes.append(row)
    return {
        "outcomes": outcomes,
        "requests": len(log),
        "distinct_requests": len({repr(r.view) for r in log}),
        "request_views": sorted({repr(r.view) for r in log}),
        "ledger": sorted((c.unit, c.round, c.status) for c in result.calls),
        "gateway_nodes": gateway_nodes,
        "killed": policy.killed,
        "in_flight_at_kill": policy.in_flight,
        "restarted": not set(restarted) & set(policy.pids),
        "resubmitted": pool.resubmitted,
    }


def gateway(nodes: dict[str, Any], cache: str) -> dict[str, Any]:
    """The same agents without and with the gateway actors killed (separate request caches)."""
    os.environ["OPENAI_API_KEY"] = "sk-test-multinode-faults"
    reference = _explain(os.path.join(cache, "reference"), None, nodes)
    faulted = _explain(os.path.join(cache, "faulted"), 5, nodes)
    return {"reference": reference, "faulted": faulted}


@dataclass
class KillReplicaAfter:
    """A meter that measures through `inner` and SIGKILLs worker0's model replica once, after the
    agents' `after`-th measurement (so later ones find it dead or restarting)."""

    inner: Any
    after: int | None
    state: dict[str, Any]

    def measure(self, images: Any) -> list[float]:
        values = self.inner.measure(images)
        with self.state["lock"]:
            self.state["measured"] += 1
            if self.after is not None and self.state["measured"] == self.after and not self.state["killed"]:
                (pid,) = actors_named(self.state["nodes"]["worker0"], "ModelReplica")
                os.kill(pid, signal.SIGKILL)
                self.state["killed"].append(pid)
        return values


def _agents(cache: str, after: int | None, nodes: dict[str, Any], head: Any) -> dict[str, Any]:
    """Four probe-CNN units explained by ExperimenterPolicy through two gateway actors, their
    measurements on two model replicas on the worker nodes; with `after`, the replica on worker0
    is killed after that many measurements."""
    from coin_scale.agent import ExperimentTools
    from coin_scale.bench.llm_bench import _probe_model, _subjects
    from coin_scale.explain.llm import explain_subjects
    from coin_scale.sweep.agents import agent_replicas
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer
    from unity_pool.tools import LocalRenderer, RenderTools

    payload, layer = _probe_model()
    state: dict[str, Any] = {"lock": threading.Lock(), "measured": 0, "killed": [], "nodes": nodes}
    with FakeProviderServer("openai", ExperimenterPolicy()) as server, agent_replicas(
        payload, layer, replicas=2
    ) as replicas:
        batcher = replicas.batcher
        replica_nodes = sorted(
            name for name, node in nodes.items() for _ in actors_named(node, "ModelReplica")
        )
        on_head = actors_named(head, "ModelReplica")
        subjects, _ = _subjects(4, payload, layer, replicas)
        before = (batcher.batches, batcher.images)

        def tools(subject: Any) -> ExperimentTools:
            meter = KillReplicaAfter(replicas.meter(subject.unit), after, state)
            return ExperimentTools(subject, meter, RenderTools(renderer=LocalRenderer()))

        prepared, pool = gateways_on_workers(server.base_url, cache)
        try:
            result = explain_subjects(
                prepared, subjects, tools, run_id="agents", gateways=pool, progress=False
            )
        finally:
            pool.shutdown()
        passes = (batcher.batches - before[0], batcher.images - before[1])
    steps = [
        {k: step[k] for k in ("unit", "round", "step", "tool", "arguments_json", "status", "result_summary")}
        for o in result.outcomes for step in (asdict(s) for s in o.experiments)
    ]  # fmt: skip
    return {
        "outcomes": [(o.status, o.label, o.description, o.rounds, o.error) for o in result.outcomes],
        "steps": steps,
        "replica_nodes": replica_nodes,
        "replicas_on_driver_node": len(on_head),
        "killed": state["killed"],
        "measurements": state["measured"],
        "passes": passes,
    }


def agents(nodes: dict[str, Any], head: Any, cache: str) -> dict[str, Any]:
    """The same agents without and with a model replica killed (separate request caches)."""
    os.environ["OPENAI_API_KEY"] = "sk-test-multinode-faults"
    reference = _agents(os.path.join(cache, "agents-reference"), None, nodes, head)
    faulted = _agents(os.path.join(cache, "agents-faulted"), 4, nodes, head)
    return {"reference": reference, "faulted": faulted}


@dataclass
class KillReplicasAt:
    """The fake server's policy, which SIGKILLs every model replica on the worker nodes while
    answering request `at` (the agents are mid-run: their measurements are on those replicas)."""

    inner: Any
    at: int | None
    nodes: dict[str, Any]
    head: Any = None
    seen: int = 0
    killed: list[tuple[str, int]] = field(default_factory=list)
    on_head_mid_run: int = -1
    """Model replicas on the driver's node while the server answers the 5th request."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, view: Any) -> Any:
        with self.lock:
            self.seen += 1
            if self.seen == 5:
                self.on_head_mid_run = len(actors_named(self.head, "ModelReplica"))
            if self.seen == self.at and not self.killed:
                for name, node in self.nodes.items():
                    for pid in actors_named(node, "ModelReplica"):
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append((name, pid))
        return self.inner(view)


def _sweep(root: str, at: int | None, nodes: dict[str, Any], head: Any) -> dict[str, Any]:
    """`run_sweep.py --json` with the OpenAI agents against the fake server, on this cluster
    (the driver's head node has no CPU, so no model replica); with `at`, every model replica is
    killed while the server answers request `at`. Its own warehouse, request cache and cache."""
    import contextlib
    import io

    import run_sweep
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer

    os.environ["COIN_SCALE_CACHE"] = os.path.join(root, "cache")
    policy = KillReplicasAt(ExperimenterPolicy(), at, nodes, head)
    on_head: list[int] = []
    with FakeProviderServer("openai", policy) as server:
        argv = ["--model", "resnet18", "--weights", "none", "--top-k", "2", "--negatives", "1",
                "--probe-images", "50", "--no-unit-scores", "--warehouse",
                os.path.join(root, "wh"), "--run-id", "multinode", "--no-progress", "--explainer",
                "openai", "--base-url", server.base_url, "--rpm", "60000", "--tpm", "1e12",
                "--json"]  # fmt: skip (the request cache is the warehouse's: one per run)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run_sweep.main(argv)
        on_head = actors_named(head, "ModelReplica")
        requests = len(server.log)
    text = out.getvalue()
    start = text.find("\n{") + 1 if not text.startswith("{") else 0
    result = json.loads(text[start:]) if code == 0 else {}
    if start:
        print(f"sweep scenario: stdout before the JSON: {text[:start][:2000]!r}", file=sys.stderr)
    units = [
        (u["unit"], u["status"], u["label"])
        for side in ("positive", "negative") for u in result.get(side, [])
    ]  # fmt: skip
    return {
        "code": code, "units": units, "text": result.get("text"),
        "forward_passes": result.get("forward_passes"), "requests": requests,
        "killed": policy.killed, "replicas_on_driver_node": len(on_head),
        "replicas_on_driver_node_mid_run": policy.on_head_mid_run,
    }  # fmt: skip


def sweep(nodes: dict[str, Any], head: Any, root: str) -> dict[str, Any]:
    """The same LLM sweep without and with the model replicas killed mid-run."""
    os.environ["OPENAI_API_KEY"] = "sk-test-multinode-sweep"
    reference = _sweep(os.path.join(root, "reference"), None, nodes, head)
    faulted = _sweep(os.path.join(root, "faulted"), 5, nodes, head)
    return {"reference": reference, "faulted": faulted}


def _report(line: str) -> None:
    path = os.environ.get("FAULT_REPORTS")
    if not path:
        print(line, flush=True)
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main(argv: list[str]) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0}
    )  # the head takes no work
    workers = [cluster.add_node(num_cpus=1, resources={WORKER: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = {f"worker{i}": node for i, node in enumerate(workers)}
    try:
        args = list(argv)
        while args:
            name = args.pop(0)
            if name == "replicas":
                out = replicas(nodes, args.pop(0), args.pop(0))
            elif name == "render":
                out = render(nodes)
            elif name == "gateway":
                out = gateway(nodes, args.pop(0))
            elif name == "agents":
                out = agents(nodes, cluster.head_node, args.pop(0))
            elif name == "sweep":
                out = sweep(nodes, cluster.head_node, args.pop(0))
            else:
                raise SystemExit(f"unknown scenario {name!r}")
            _report(json.dumps({"scenario": name, **out}, default=str))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])

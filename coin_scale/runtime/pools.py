"""Opening Ray and the actor pools, once for every stage: `replica_pool` (model replicas for a
dissection or an SAE's activation pass), `image_text_pool` (the image-text replicas that embed a
photo probe for the clip explainers), `gateway_pool` (the LLM gateway actors of the agents) and
`render_pool` (render workers: the agents' renders and edits), and `ReplicaModel` (one replica
that runs the sweep's attribution, chain edges, ablations and scoring as `ModuleCall`s).
Each is a context manager: connect (a local Ray unless `address` is given), start the pool, wait
until it is ready, yield it, then shut the pool down and close the session (a session this
process did not start is left open).

Inside `keep_ray()` (a sweep, `coin-scale dissect`) the pools share one session: the first pool
starts Ray, the later ones reuse it, and it closes when the block ends; a local Ray start costs
seconds, and a sweep over photographs opens three pools. A replica pool closed inside the block is
kept (parked) and handed to the next stage that asks for the same work (a sweep's probe pass, its
agents and its activation maps hook the same layer the same way), since every replica start is a
fresh process importing torch and building the model: seconds on a CPU, more with a CUDA context.
The parked pool is shut down as soon as anything else would need its cores or GPUs: a replica
pool of other work, any other model pool, a render pool that reserves CPUs or GPUs, or the end of
the block.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from coin_scale.errors import UserError
from coin_scale.models.batches import OpenReplicas, ReplicaWork
from coin_scale.models.image_text import ImageTextSource, OpenEncoders
from coin_scale.models.loading import ModelPayload
from coin_scale.models.module_call import ModuleCall

if TYPE_CHECKING:  # Ray is imported only when a pool starts (a dry run or a cached result never)
    from coin_scale.actors.cluster import RaySession
    from coin_scale.actors.image_text import ImageTextPool
    from coin_scale.actors.llm_gateway import GatewayPool
    from coin_scale.actors.pool import ReplicaPool
    from coin_scale.actors.render_batches import RenderPoolConfig
    from coin_scale.actors.render_pool import RenderPool
    from coin_scale.actors.similarity import SimilarityPool
    from coin_scale.agent.generation import ImageGenerator
    from coin_scale.eval.similarity import SimilarityWork
    from coin_scale.explain.llm import PreparedLLM

log = logging.getLogger(__name__)

_Pool = TypeVar("_Pool", bound=Any)
"""A model pool (`wait_ready`, `shutdown`)."""

_kept: list[RaySession] = []
"""Sessions started inside `keep_ray`, closed when its outermost block ends."""
_keeping = 0
GENERATOR_POOL_STARTS = [0]
"""How many agents' render pools this process has started (the tests count them)."""
_held_generators: dict[str, tuple[RenderPool, ExitStack]] = {}
"""The agents' render pools opened inside `keep_ray` (by generator), shut down when its outermost
block ends: a sweep's agents and its predictive evaluation share one set of diffusion workers."""
_parked: list[tuple[tuple[Any, ...], ReplicaPool]] = []
"""At most one replica pool kept inside `keep_ray` after its stage closed it, with its work's key
(`_work_key`), for the next stage asking for the same work."""
REPLICA_POOL_STARTS = [0]
"""How many replica pools this process has started (the tests count them)."""


@contextmanager
def keep_ray() -> Iterator[None]:
    """Pools opened inside share one Ray session, started by the first that needs it (none when
    every result is cached) and closed when the outermost block ends."""
    global _keeping
    _keeping += 1
    try:
        yield
    finally:
        _keeping -= 1
        if _keeping == 0:
            release_parked()
            while _held_generators:
                _, (_, stack) = _held_generators.popitem()
                stack.close()
            while _kept:
                _kept.pop().close()


def _connect(address: str | None) -> RaySession:
    """`connect(address)`; inside `keep_ray` a session this starts is kept for the block."""
    from coin_scale.actors.cluster import RaySession, connect

    session = connect(address)
    if _keeping and session.owned:
        _kept.append(session)
        return RaySession(address=address, owned=False)
    return session


@contextmanager
def _ready_pool(
    address: str | None,
    replicas: int | None,
    what: str,
    make: Callable[[int, float, float], _Pool],
    *,
    keep: tuple[Any, ...] | None = None,
) -> Iterator[_Pool]:
    """The one sequence of every model pool: take the parked pool when it was parked under
    `keep`, else shut it down and start one: connect, size it (one replica per GPU, else one
    using every core, unless `replicas`), `make(n, cpus_each, gpus_each)`, wait until ready;
    yield; shut it down (inside `keep_ray`, park it under `keep` instead); close the session."""
    from coin_scale.actors.cluster import cpu_gpu_per_replica

    pool = _take_parked(keep)
    if pool is None:
        release_parked()  # its cores and GPUs go to the new pool
    session = _connect(address)
    try:
        if pool is not None:
            log.info("the %s of the last stage do this work too: reused", what)
        else:
            n, cpus, gpus = cpu_gpu_per_replica(replicas)
            log.info("%d %s, %s CPU and %s GPU each", n, what, cpus, gpus)
            pool = make(n, cpus, gpus)
            try:
                pool.wait_ready()
            except BaseException:
                pool.shutdown()
                raise
        with _parking(keep, pool):
            yield pool
    finally:
        session.close()


@contextmanager
def replica_pool(
    work: ReplicaWork, *, address: str | None, replicas: int | None
) -> Iterator[ReplicaPool]:
    """Model replicas doing `work` on Ray, ready; their `startup_seconds` times their start
    alone, not Ray's. Inside `keep_ray` they are parked on exit for a later stage doing the same
    work (`_work_key`)."""
    from coin_scale.actors.pool import ReplicaPool

    def make(n: int, cpus: float, gpus: float) -> ReplicaPool:
        REPLICA_POOL_STARTS[0] += 1
        return ReplicaPool(work, replicas=n, cpus_each=cpus, gpus_each=gpus)

    keep = _work_key(work, address, replicas)
    with _ready_pool(address, replicas, "replica(s)", make, keep=keep) as pool:
        yield pool


def _work_key(work: ReplicaWork, address: str | None, replicas: int | None) -> tuple[Any, ...]:
    """What makes two replica pools interchangeable: the same model and weights, preprocessing,
    hooked layers, reductions and SAEs (by content hash), at the same address and size."""
    p = work.payload
    transforms = sorted((name, sae.sha256) for name, sae in (work.unit_transforms or {}).items())
    return (
        p.model_id, p.arch, repr(sorted(p.arch_kwargs.items())), p.weights_id, repr(p.preprocess),
        tuple(sorted(work.layers.items())), tuple(work.reductions), tuple(transforms), address,
        replicas,
    )  # fmt: skip


def _take_parked(key: tuple[Any, ...] | None) -> Any:
    """The parked pool when it was parked under `key` (None otherwise; it stays parked)."""
    if key is not None and _parked and _parked[-1][0] == key:
        return _parked.pop()[1]
    return None


@contextmanager
def _parking(key: tuple[Any, ...] | None, pool: Any) -> Iterator[None]:
    """On exit, inside `keep_ray`, a pool whose stage ended without an error is parked under
    `key` for the next stage; otherwise (no `key`, outside the block, the stage failed) it is
    shut down."""
    try:
        yield
    except BaseException:
        pool.shutdown()
        raise
    if key is not None and _keeping:
        release_parked()
        _parked.append((key, pool))
    else:
        pool.shutdown()


def release_parked() -> None:
    """Shut down the parked replica pool, if any (its cores and GPUs are wanted elsewhere)."""
    while _parked:
        _parked.pop()[1].shutdown()


def replica_opener(*, address: str | None, replicas: int | None) -> OpenReplicas:
    """The `OpenReplicas` a stage calls when it has work: `replica_pool` at `address`."""
    return functools.partial(replica_pool, address=address, replicas=replicas)


@contextmanager
def image_text_pool(
    source: ImageTextSource, *, address: str | None, replicas: int | None
) -> Iterator[ImageTextPool]:
    """Image-text replicas of `source` on Ray, ready."""
    from coin_scale.actors.image_text import ImageTextPool

    def make(n: int, cpus: float, gpus: float) -> ImageTextPool:
        return ImageTextPool(source, replicas=n, cpus_each=cpus, gpus_each=gpus)

    with _ready_pool(address, replicas, f"image-text replica(s) of {source.model}", make) as pool:
        yield pool


def image_text_opener(*, address: str | None, replicas: int | None = None) -> OpenEncoders:
    """The `OpenEncoders` the image-text scorers call when a probe's embeddings are not cached."""
    return functools.partial(image_text_pool, address=address, replicas=replicas)


def start_gateways(prepared: PreparedLLM) -> GatewayPool:
    """The gateway actors for `prepared` (Ray must be connected)."""
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec

    if prepared.api_key is None:
        raise UserError("the LLM gateway needs an API key (prepare(require_key=True))")
    spec = GatewaySpec(
        config=prepared.gateway_config(), limits=prepared.limits,
        base_url=prepared.config.base_url,
    )  # fmt: skip
    return GatewayPool(spec, prepared.api_key, actors=prepared.config.gateway_actors)


@contextmanager
def gateway_pool(prepared: PreparedLLM, *, address: str | None) -> Iterator[GatewayPool]:
    """The LLM gateway actors of `prepared` on Ray at `address` (`Gateways` to the agents)."""
    session = _connect(address)
    try:
        pool = start_gateways(prepared)
        try:
            yield pool
        finally:
            pool.shutdown()
    finally:
        session.close()


AGENT_RENDER_WORKERS = 2
"""Render workers the agents of a sweep share (each a procedural renderer process)."""


@contextmanager
def render_pool(config: RenderPoolConfig | None = None, *, address: str | None) -> Iterator[RenderPool]:
    """Render workers on Ray at `address`, their backends started (a one-line `ResourceError`
    when they cannot be), shut down on exit. The default is the agents' pool: procedural
    backends that reserve no CPU (they render in bursts, between an agent's LLM calls, beside
    model replicas that take every core), spread over the cluster's nodes by Ray."""
    from coin_scale.actors.render_batches import RenderPoolConfig
    from coin_scale.actors.render_pool import RenderPool
    from coin_scale.errors import ResourceError
    from unity_pool.client import RendererUnavailable

    config = config or RenderPoolConfig(workers=AGENT_RENDER_WORKERS, cpus_each=0.0)
    if config.cpus_each > 0 or config.gpus_each > 0:
        release_parked()  # its cores and GPUs go to the render workers
    session = _connect(address)
    try:
        with RenderPool(config) as pool:
            try:
                pool.wait_ready(timeout=max(120.0, config.start_timeout + 30.0))
            except RendererUnavailable as err:
                raise ResourceError(f"render workers: {err}") from None
            yield pool
    finally:
        session.close()


def generator_pool_config(generator: ImageGenerator) -> RenderPoolConfig:
    """The agents' render pool for `generator`: the procedural default (two workers reserving no
    CPU), Unity players (two, on nodes offering `unity_slot` when the cluster has any), or
    diffusion servers: one per GPU of the cluster, each given its GPU, else one on the CPU; they
    reserve no CPU (they work in bursts between the agents' LLM calls) and may take minutes to
    load a model and to answer a batch on a CPU. Connect to Ray first."""
    import ray

    from coin_scale.actors.render_batches import RenderPoolConfig

    command = generator.command()
    if command is None:
        return RenderPoolConfig(workers=AGENT_RENDER_WORKERS, cpus_each=0.0)
    if generator.unity is not None:
        unity = generator.unity
        return RenderPoolConfig(
            workers=AGENT_RENDER_WORKERS, command=command, cpus_each=0.0,
            start_timeout=unity.startup_timeout, request_timeout=unity.render_timeout,
            unity_slot=ray.cluster_resources().get("unity_slot", 0) > 0,
        )  # fmt: skip
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return RenderPoolConfig(
        workers=max(1, gpus), command=command, cpus_each=0.0, gpus_each=1.0 if gpus else 0.0,
        batch_size=4, start_timeout=DIFFUSION_START_S, request_timeout=DIFFUSION_REQUEST_S,
    )  # fmt: skip


DIFFUSION_START_S = 900.0
"""Seconds a diffusion worker may take to load its pipelines (a CPU loading SD from disk)."""

DIFFUSION_REQUEST_S = 1800.0
"""Seconds one generation or edit request may take on a CPU before the backend counts as hung."""


@contextmanager
def agents_render_pool(generator: ImageGenerator, *, address: str | None) -> Iterator[RenderPool]:
    """The agents' render pool for `generator` (see `generator_pool_config`), ready. Inside
    `keep_ray`, a pool that reserves no GPU starts once and is kept for the block (diffusion
    workers load their pipelines for minutes on a CPU); one that holds GPUs is shut down on exit,
    so the stages in between can place their model replicas there."""
    import json
    from dataclasses import asdict

    session = _connect(address)
    try:
        config = generator_pool_config(generator)
        if not _keeping or config.gpus_each > 0:
            GENERATOR_POOL_STARTS[0] += 1
            with render_pool(config, address=address) as pool:
                yield pool
            return
        key = json.dumps([asdict(generator), address], sort_keys=True, default=str)
        if key not in _held_generators:
            GENERATOR_POOL_STARTS[0] += 1
            stack = ExitStack()
            stack.callback(_connect(address).close)
            try:
                _held_generators[key] = (
                    stack.enter_context(render_pool(config, address=address)), stack
                )
            except BaseException:
                stack.close()
                raise
        yield _held_generators[key][0]
    finally:
        session.close()


class ReplicaModel:
    """A `ModelRunner` on one model replica of `payload`: every `ModuleCall` (attribution, chain
    edges, ablations, scoring, layer listing) runs there, so the driver holds no copy of the
    model. The replica starts on the first call and stays until `release()`. It reserves no CPU
    or GPU: it works in bursts (one image's attribution, the ablations, the scores) between the
    stages whose pools take every core, and idles while they run, so it never keeps them from
    being placed; when it works it uses its node's cores. On a cluster it is placed on the node
    with the most CPUs other than the driver's. A user error raised by
    the call on the replica (an unknown layer, a layer path that does not feed the output) is
    raised here as itself, without Ray's wrapping."""

    def __init__(self, payload: ModelPayload, *, address: str | None) -> None:
        self.payload = payload
        self.address = address
        self.starts = 0
        self._stack: ExitStack | None = None
        self._pool: ReplicaPool | None = None

    def _open(self) -> ReplicaPool:
        from coin_scale.actors.pool import ReplicaPool

        stack = ExitStack()
        session = _connect(self.address)
        stack.callback(session.close)
        work = ReplicaWork(self.payload, {}, ("max",), None)
        pool = ReplicaPool(work, replicas=1, cpus_each=0, gpus_each=0,
                           actor_options=_away_from_driver())  # fmt: skip
        stack.callback(pool.shutdown)
        try:
            pool.wait_ready()
        except BaseException:
            stack.close()
            raise
        self._stack, self._pool = stack, pool
        self.starts += 1
        log.info("the sweep's model replica is ready (%.1f s)", pool.startup_seconds)
        return pool

    def __call__(self, call: ModuleCall) -> Any:
        from coin_scale.actors.dispatch import task_cause

        pool = self._pool or self._open()
        try:
            (result,) = pool.call([call])
        except Exception as err:
            raise task_cause(err) from None
        return result.value

    def release(self) -> None:
        """Stop the replica (a later call starts it again)."""
        stack, self._stack, self._pool = self._stack, None, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> ReplicaModel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _away_from_driver() -> dict[str, Any]:
    """Ray options placing an actor on the live node with the most CPUs that is not the driver's
    (none on a single machine)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [
        node for node in ray.nodes()
        if node.get("Alive") and node["NodeID"] != here and node["Resources"].get("CPU", 0) > 0
    ]  # fmt: skip
    if not others:
        return {}
    best = max(others, key=lambda node: node["Resources"]["CPU"])
    # Hard: a replica that reserves no CPU could otherwise land on a head node with none (seen
    # once in CI, after a restart). Ray restarts a killed replica on the same node.
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(best["NodeID"], soft=False)}


PROBE_RENDER_WORKERS = 4
"""Most render workers a probe set is rendered with (one per CPU of the cluster up to this)."""


def render_opener(
    *, address: str | None, backend: ImageGenerator | None = None
) -> Callable[[], AbstractContextManager[RenderPool]]:
    """What `probe.rendered.rendered_probe` calls when a probe or scoring set is not cached: a
    render pool of procedural workers, one per CPU of the cluster (at most
    `PROBE_RENDER_WORKERS`), each reserving one CPU, shut down when the set is written. With a
    Unity or diffusion `backend` (`--probe-renderer generator`), that backend's workers render
    the scenes instead (`generator_pool_config`: the Unity players' slots, one diffusion worker
    per GPU); the opener's `backend` names it, so its sets are cached apart."""
    command = backend.command() if backend is not None else None

    @contextmanager
    def opened() -> Iterator[RenderPool]:
        import ray

        from coin_scale.actors.render_batches import RenderPoolConfig

        session = _connect(address)
        try:
            if backend is not None and command is not None:
                config = generator_pool_config(backend)
            else:
                cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
                workers = max(1, min(PROBE_RENDER_WORKERS, cpus))
                config = RenderPoolConfig(workers=workers, cpus_each=1.0, batch_size=16)
            with render_pool(config, address=address) as pool:
                yield pool
        finally:
            session.close()

    opened.backend = _backend_name(backend) if command is not None else "procedural"  # type: ignore[attr-defined]
    return opened


def _backend_name(backend: ImageGenerator | None) -> str:
    """`unity-<digest>` / `diffusion-<digest>` of the backend's settings (its models, sizes)."""
    import hashlib
    import json
    from dataclasses import asdict

    if backend is None:
        return "procedural"
    settings = json.dumps(asdict(backend), sort_keys=True, default=str)
    return f"{backend.kind}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


@contextmanager
def similarity_pool(work: SimilarityWork, *, address: str | None) -> Iterator[SimilarityPool]:
    """One similarity replica (MIS's perceptual model over the probe's images) on Ray, ready:
    a GPU when the cluster has one, else every core; shut down on exit."""
    from coin_scale.actors.similarity import SimilarityPool

    def make(n: int, cpus: float, gpus: float) -> SimilarityPool:
        return SimilarityPool(work, replicas=n, cpus_each=cpus, gpus_each=gpus)

    with _ready_pool(address, 1, "similarity replica(s)", make) as pool:
        yield pool


def similarity_opener(*, address: str | None) -> Callable[[SimilarityWork], AbstractContextManager[Any]]:
    """What `eval.mis.run_mis` calls once the probe pass is done: `similarity_pool` at `address`."""
    return functools.partial(similarity_pool, address=address)

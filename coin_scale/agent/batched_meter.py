"""Many agents' measurements gathered into shared forward passes.

Every agent's `measure(images)` needs the same thing from the model: one forward pass to the
unit's layer, reduced over space. Agents that run at once on one layer therefore share passes:
`MeasureBatcher` gathers the requests that arrive within a short window (or until a batch is
full) into one batch, runs it through `forward` (in production a call on the model replica pool,
`coin_scale.sweep.agents`), and hands each request its rows. `BatchedUnitMeter` is the agent's
`UnitMeter` on top of it. Pure threads; the batcher knows nothing of Ray or the model.
`RequestBatcher` is the gathering itself, for any items (the agents' image generation uses it
too, `coin_scale.agent.generation`).

32 agents measuring 10 images each at once cost ceil(320 / max_images) passes, not 32.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from PIL import Image

from coin_scale.models.preprocess import Preprocess

PooledForward = Callable[[np.ndarray], np.ndarray]
"""uint8 (batch, channel, crop, crop) images -> float32 (batch, unit) reduced activations of the
layer (every unit: a pass costs the same whichever units are read)."""


@dataclass
class _Request:
    items: Any
    done: Future[Any] = field(default_factory=Future)


def _concat(parts: list[Any]) -> list[Any]:
    return [item for part in parts for item in part]


class RequestBatcher:
    """Gathers concurrent requests (each a sequence of items) into batches of at most
    `max_items`, each run by `run` (items -> one result per item, in order).

    A batch leaves when it is full or when `window_s` has passed since its first request
    arrived; while `in_flight` batches run, new requests keep gathering. A request larger than
    `max_items` is split. `join` puts requests' items (and results) together: list concatenation
    by default, `np.concatenate` for arrays. Thread-safe; `close()` (or the context manager)
    stops the gathering thread after the queue is drained.
    """

    size_name = "max_items"
    """The batch size's name in errors."""

    def __init__(
        self,
        run: Callable[[Any], Any],
        *,
        max_items: int = 64,
        window_s: float = 0.005,
        in_flight: int = 2,
        join: Callable[[list[Any]], Any] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_items < 1 or in_flight < 1 or window_s < 0:
            raise ValueError(
                f"{type(self).__name__}: {self.size_name} and in_flight must be >= 1 and window_s "
                ">= 0; "
                f"got {max_items}, {in_flight}, {window_s}"
            )
        self.run = run
        self.max_items = max_items
        self.window_s = window_s
        self.join = join if join is not None else _concat
        self._slots = threading.Semaphore(in_flight)
        self._queue: list[_Request] = []
        self._ready = threading.Condition()
        self._closed = False
        self.batches = 0
        """Batches run so far."""
        self.items = 0
        """Items run so far."""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Any) -> Any:
        """The results of `items` (joined like them), blocking until their batches have run;
        raises a batch's error if one failed. Empty `items` are not sent."""
        requests = [
            _Request(items[i : i + self.max_items]) for i in range(0, len(items), self.max_items)
        ]
        if not requests:
            return self.join([items])
        with self._ready:
            if self._closed:
                raise RuntimeError(f"{type(self).__name__} is closed")
            self._queue.extend(requests)
            self._ready.notify()
        return self.join([r.done.result() for r in requests])

    def close(self) -> None:
        """Stop after the requests already queued have run."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self._slots.acquire()  # while every slot is busy, later requests keep queueing
            threading.Thread(target=self._run, args=(batch,), daemon=True).start()

    def _gather(self) -> list[_Request] | None:
        """The next batch: wait for a first request, then for more until full or the window ends."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            deadline = time.monotonic() + self.window_s
            while self._size() < self.max_items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch: list[_Request] = []
            total = 0
            while self._queue and (not batch or total + len(self._queue[0].items) <= self.max_items):
                request = self._queue.pop(0)
                batch.append(request)
                total += len(request.items)
            return batch

    def _size(self) -> int:
        return sum(len(r.items) for r in self._queue)

    def _run(self, batch: list[_Request]) -> None:
        try:
            items = self.join([r.items for r in batch])
            results = self.run(items)
            if len(results) != len(items):
                raise RuntimeError(
                    f"{type(self).__name__}: {len(results)} results for {len(items)} items"
                )
            with self._ready:  # several batches may finish at once
                self.batches += 1
                self.items += len(items)
            start = 0
            for request in batch:
                request.done.set_result(results[start : start + len(request.items)])
                start += len(request.items)
        except BaseException as err:  # every waiting caller gets the error, none hangs
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(err)
        finally:
            self._slots.release()


class MeasureBatcher(RequestBatcher):
    """Gathers concurrent measurements into forward passes of at most `max_images` images
    (see `RequestBatcher`): uint8 image arrays in, float32 (image, unit) activations out.

    The model is deterministic, so an image is measured once per layer: the rows of the last
    `memo_images` distinct images are kept by a digest of their pixels, and a request for an
    image already on its way through the model (another agent's, or a repeat in the same
    request) waits for that row instead of sending it again. Agents explaining the units of one
    layer render many of the same scenes (their shared render cache, `unity_pool.render_cache`,
    hands them the same pixels); each unit reads its own column of the same row."""

    size_name = "max_images"

    def __init__(
        self,
        forward: PooledForward,
        *,
        max_images: int = 64,
        window_s: float = 0.005,
        in_flight: int = 2,
        memo_images: int = 4096,
    ) -> None:
        if memo_images < 0:
            raise ValueError(f"memo_images: expected >= 0; got {memo_images!r}")
        self.forward = forward
        self.memo_images = memo_images
        self._memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._pending: dict[bytes, Future[np.ndarray]] = {}
        """The images on their way through the model, by digest: their rows to come."""
        self._memo_lock = threading.Lock()
        self.memo_hits = 0
        """Images answered from the memo or by a pass another request had asked for."""
        super().__init__(
            self._forward, max_items=max_images, window_s=window_s, in_flight=in_flight,
            join=np.concatenate, name="measure-batcher",
        )  # fmt: skip

    @property
    def max_images(self) -> int:
        return self.max_items

    @property
    def images(self) -> int:
        """Images passed through the model so far."""
        return self.items

    def clear_memo(self) -> None:
        """Forget every measured image (the next measurements run the model again)."""
        with self._memo_lock:
            self._memo.clear()

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        values = np.asarray(self.forward(pixels), dtype=np.float32)
        if values.ndim != 2 or len(values) != len(pixels):
            raise RuntimeError(f"forward returned shape {values.shape} for {len(pixels)} images")
        return values

    def activations(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (n, unit) activations of uint8 (n, channel, crop, crop) images; blocks until
        their batch has run, and raises the batch's error if it failed."""
        if len(pixels) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        keys = [_digest(p) for p in pixels]
        rows: dict[bytes, Future[np.ndarray]] = {}
        mine: list[int] = []  # the images this request sends: new to the memo and to the passes
        with self._memo_lock:
            for i, key in enumerate(keys):
                if key in rows:
                    continue
                row = self._memo.get(key)
                if row is not None:
                    self._memo.move_to_end(key)
                    rows[key] = Future()
                    rows[key].set_result(row)
                elif key in self._pending:
                    rows[key] = self._pending[key]
                else:
                    rows[key] = self._pending[key] = Future()
                    mine.append(i)
            self.memo_hits += len(keys) - len(mine)
        if mine:
            try:
                values = np.asarray(self.submit(pixels[mine]))
            except BaseException as err:  # whoever waits on these rows gets the error too
                self._settle(keys, mine, error=err)
                raise
            self._settle(keys, mine, values=values)
        return np.stack([rows[k].result() for k in keys])

    def _settle(
        self,
        keys: list[bytes],
        mine: list[int],
        *,
        values: np.ndarray | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Hand the rows of `mine` (or `error`) to their waiters, and keep the rows."""
        with self._memo_lock:
            for j, i in enumerate(mine):
                done = self._pending.pop(keys[i])
                if values is None:
                    done.set_exception(error or RuntimeError("no rows"))
                    continue
                row = values[j].copy()
                done.set_result(row)
                if self.memo_images:
                    self._memo[keys[i]] = row
            while len(self._memo) > self.memo_images:
                self._memo.popitem(last=False)


def _digest(pixels: np.ndarray) -> bytes:
    """A digest of one image's pixels, shape and dtype included."""
    h = hashlib.blake2b(np.ascontiguousarray(pixels).data, digest_size=16)
    h.update(repr((pixels.shape, pixels.dtype.str)).encode())
    return h.digest()


class BatchedUnitMeter:
    """One unit's `UnitMeter` through a shared `MeasureBatcher`: images are preprocessed here as
    a dissection's are (`Preprocess.load`), measured in the batcher's shared passes, and the
    unit's column read."""

    def __init__(self, batcher: MeasureBatcher, preprocess: Preprocess, unit: int) -> None:
        self.batcher = batcher
        self.preprocess = preprocess
        self.unit = unit

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        """The unit's activation on every image, in order."""
        if not images:
            return []
        pixels = np.stack([self.preprocess.load(image).numpy() for image in images])
        values = self.batcher.activations(pixels)
        if values.shape[1] <= self.unit:
            raise RuntimeError(f"the layer has {values.shape[1]} units; no unit {self.unit}")
        return [float(v) for v in values[:, self.unit]]

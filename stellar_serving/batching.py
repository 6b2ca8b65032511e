"""Opportunistic micro-batching of concurrent small requests.

One booster call costs a fixed few hundred microseconds whatever the number of
rows, so with many concurrent one-object calls the server predicts them
together. No timer and no extra thread: a caller that finds no prediction
running predicts at once (concurrency 1 pays nothing); callers that arrive
while one runs queue up, and the first of them to get the turn predicts for
the whole queue.

Each queued item keeps the LoadedModel its request took, and the queue is
predicted per model object, so a swap in the middle still answers every
request with the model (and version) it started with.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from stellar_serving.model_store import LoadedModel


class _Item:
    __slots__ = ("model", "inputs", "result", "error", "done")

    def __init__(self, model: LoadedModel, inputs: np.ndarray) -> None:
        self.model = model
        self.inputs = inputs
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher:
    def __init__(self, max_rows: int, observe: Callable[[int], None] | None = None) -> None:
        self.max_rows = max_rows  # requests this large (or larger) predict on their own
        self._observe = observe or (lambda rows: None)  # rows per booster call, for the metrics
        self._cv = threading.Condition(threading.Lock())
        self._busy = False
        self._queue: list[_Item] = []

    def predict(self, model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) >= self.max_rows:
            self._observe(len(inputs))
            return model.predict_proba(inputs)
        item = _Item(model, inputs)
        with self._cv:
            self._queue.append(item)
            while self._busy and not item.done:
                self._cv.wait()
            if not item.done:
                self._busy = True  # our turn: predict everything queued so far
                batch, self._queue = self._queue, []
            else:
                batch = None
        if batch is not None:
            try:
                _predict_together(batch, self._observe)
            finally:
                with self._cv:
                    for queued in batch:
                        queued.done = True
                    self._busy = False
                    self._cv.notify_all()
        if item.error is not None:
            raise item.error
        return item.result


def _predict_together(batch: list[_Item], observe: Callable[[int], None]) -> None:
    groups: dict[int, list[_Item]] = {}
    for item in batch:
        groups.setdefault(id(item.model), []).append(item)
    for items in groups.values():
        try:
            observe(sum(len(i.inputs) for i in items))
            if len(items) == 1:
                items[0].result = items[0].model.predict_proba(items[0].inputs)
                continue
            proba = items[0].model.predict_proba(np.concatenate([i.inputs for i in items]))
            start = 0
            for i in items:
                i.result = proba[start:start + len(i.inputs)]
                start += len(i.inputs)
        except BaseException as exc:  # every waiter hears about it, none hangs
            for i in items:
                i.error = exc

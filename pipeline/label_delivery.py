"""One delivery of the GPU stage. It labels its unit's clips and, to keep the GPU's batches full
and the GPU busy from one unit to the next, those of other waiting label units of the same
model version: adopted under its lease a task's worth at a time (`gpu_task_batches` batches),
just before the GPU needs them, for up to `gpu_delivery_s`. Each unit's outcome is recorded in
a transaction of its own as soon as its last clip is decided, on a recording thread while the
GPU goes on; a unit taken over meanwhile (after this delivery's heartbeats stopped), or one
whose recording fails, costs the others nothing."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from packsight.faults import TransientError
from packsight.models.predictions import ClipOutcome
from packsight.models.work import LeaseLostError, UnitRef
from packsight.pipeline import metrics
from packsight.pipeline.context import Context
from packsight.pipeline.labelling import (
    UnitClips,
    adopt_waiting,
    clip_loader,
    labeler_for,
    outcome_of,
    read_unit,
    record_unit,
)
from packsight.pipeline.units import Lease

if TYPE_CHECKING:
    from packsight.labels.prediction import ClipPrediction
    from packsight.vlm.clip_input import ClipInput
    from packsight.vlm.parsing import OutputParseError

log = logging.getLogger(__name__)


def label_clips(ctx: Context, unit: UnitRef, lease: Lease) -> None:
    """The GPU stage's delivery of `unit` (see the module's docstring)."""
    first = ctx.transaction(lambda s: read_unit(s, unit))
    if first is None:
        raise LookupError(f"job item {unit.item_id} of work unit {unit.id} no longer exists")
    _Delivery(ctx, lease, first).run()


class _Delivery:
    def __init__(self, ctx: Context, lease: Lease, first: UnitClips) -> None:
        self.ctx, self.lease, self.first = ctx, lease, first
        settings = ctx.settings
        self.task_clips = settings.gpu_batch_size * settings.gpu_task_batches
        # Beside a unit that failed before, or where one failure is final, nothing is adopted:
        # a shared failure would count against every unit delivered together.
        self.adopting = first.unit.failures == 0 and settings.max_attempts > 1
        self.until = math.inf  # set once the model is loaded: its loading is not the GPU's
        self.lock = threading.Lock()  # the two below, shared with the labeler's helper thread
        self.waiting: dict[int, UnitClips] = {}  # read, some clips still undecided
        # By clip id, kept for the whole delivery: a unit adopted later may share a clip
        # (two jobs over one video) that is never run twice. Bounded by gpu_delivery_s.
        self.outcomes: dict[int, ClipOutcome] = {}
        self.known = {first.unit.id}
        self.order: deque[int] = deque()  # ids of the clips given to the labeler, in order
        self.recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record")
        self.records: list[tuple[UnitClips, Future[None]]] = []
        self.outage = threading.Event()  # a recording found the database away
        self.ending = threading.Event()  # the stream stopped: adopt nothing more

    def run(self) -> None:
        units = [self.first, *self._read(self._adopt(self.ctx.transaction, initial=True))]
        cut_short = False
        try:
            if any(batch.clips for batch in units):
                cut_short = self._stream(units)
            else:
                self._register(units)
        finally:
            self.recorder.shutdown(wait=True)
        self._settle()
        if cut_short:
            self.lease.check()  # every unit held was taken over (an outage raised above)

    def _stream(self, units: list[UnitClips]) -> bool:
        """Run the clips through the model, as many units as come; True if cut short because
        nothing more could be recorded."""
        labeler = labeler_for(self.first.version, self.ctx.settings)
        self.until = time.monotonic() + self.ctx.settings.gpu_delivery_s
        stream = labeler.stream(self._loaders(units), on_batch=metrics.gpu_batch_done)
        failed = False
        try:
            while True:
                try:
                    results = next(stream, None)
                except Exception:
                    failed = True
                    raise
                if results is None:
                    return False
                self._decided(results)
                if self.lease.taken_over or self.outage.is_set():
                    return True  # stop the GPU's work now
        finally:
            # Whatever ended it: the helper adopts nothing more, and has finished (close()
            # waits for it) before run_unit settles the units held.
            self.ending.set()
            stream.close()
            if failed:
                self._blame(labeler.batch_size)

    # On the labeler's helper thread, a batch ahead of the GPU.
    def _loaders(self, units: list[UnitClips]) -> Iterator[Callable[[], ClipInput | Exception]]:
        sent: set[int] = set()  # a clip in two units (two jobs over one video) runs once
        while units:
            for clip in (clip for unit in self._register(units) for clip in unit.clips):
                if clip.id not in sent:
                    sent.add(clip.id)
                    self.order.append(clip.id)
                    yield clip_loader(self.ctx, clip)
            late = self.ending.is_set() or self.outage.is_set() or self.lease.lost
            late = late or time.monotonic() > self.until
            # A brief outage here ends the delivery's adopting, not the delivery.
            units = [] if late else self._read(self._adopt(self.ctx.try_transaction))

    def _adopt(self, transaction: Callable, *, initial: bool = False) -> list[UnitRef]:
        if not self.adopting:
            return []
        # The first round fills a task beside the delivery's own unit, each later one adds
        # a task. Units known already are no candidates (a retried transaction's are).
        clips = self.task_clips - len(self.first.clips) if initial else self.task_clips
        get = partial(
            adopt_waiting,
            ctx=self.ctx,
            first=self.first,
            lease=self.lease,
            clips=clips,
            known=frozenset(self.known),
        )
        units = [u for u in transaction(get) or [] if u.id not in self.known]
        self.known |= {u.id for u in units}
        self.lease.adopt(units)
        return units

    def _read(self, units: list[UnitRef]) -> list[UnitClips]:
        def read(session: Session) -> list[UnitClips | None]:
            return [read_unit(session, unit) for unit in units]

        batches = self.ctx.transaction(read) if units else []
        for unit, batch in zip(units, batches, strict=True):
            if batch is None:
                self.lease.finished(unit.id)  # its job is gone, and the unit with it
        return [batch for batch in batches if batch is not None]

    def _register(self, units: list[UnitClips]) -> list[UnitClips]:
        with self.lock:
            self.waiting |= {unit.unit.id: unit for unit in units}
            self._record_decided()
        return units

    def _blame(self, batch_size: int) -> None:
        """The stream raised: blame the units of the batch that failed, the first clips not
        decided (the one the GPU ran, or the one being prepared if that raised)."""
        failing = set(islice(self.order, batch_size))
        with self.lock:
            units = [u for u in self.waiting.values() if any(c.id in failing for c in u.clips)]
        if units:  # else (nothing drawn yet) the delivery's own unit keeps the blame
            self.lease.blame({unit.unit.id for unit in units})

    def _decided(self, results: list[ClipPrediction | OutputParseError | Exception]) -> None:
        clip_ids = [self.order.popleft() for _ in results]
        with self.lock:
            for clip_id, result in zip(clip_ids, results, strict=True):
                self.outcomes[clip_id] = outcome_of(clip_id, result)
            self._record_decided()

    def _record_decided(self) -> None:
        """Hand every waiting unit whose clips are all decided to the recording thread."""
        for unit_id, unit in list(self.waiting.items()):
            if all(clip.id in self.outcomes for clip in unit.clips):
                del self.waiting[unit_id]
                mine = [self.outcomes[clip.id] for clip in unit.clips]
                self.records.append((unit, self.recorder.submit(self._record, unit, mine)))

    def _record(self, unit: UnitClips, outcomes: list[ClipOutcome]) -> None:
        if self.outage.is_set():
            raise TransientError("the database was away: left for a later delivery")
        record = partial(record_unit, batch=unit, outcomes=outcomes, token=self.lease.token)
        try:
            self.ctx.transaction(record)
        except TransientError:
            self.outage.set()
            raise
        self.lease.finished(unit.unit.id)

    def _settle(self) -> None:
        """Raise what ended the units not recorded: run_unit hands them back or counts it."""
        lost: LeaseLostError | None = None
        failed: BaseException | None = None
        for unit, future in self.records:
            exc = future.exception()
            if isinstance(exc, LeaseLostError):
                log.warning("work unit %s ended meanwhile; its labels not recorded", unit.unit.id)
                lost = exc if unit.unit.id == self.first.unit.id else lost
            elif isinstance(exc, TransientError):
                raise exc  # the database is away: the rest waits with this unit
            elif exc is not None:  # this unit's failure only: the others' labels are kept
                log.error("work unit %s: recording its labels failed", unit.unit.id, exc_info=exc)
                failed = failed or exc
        if failed is not None:
            raise failed  # counted against the units not recorded
        if lost is not None:
            raise lost

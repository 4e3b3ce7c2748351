"""The consumer: claims queued runs in submission order and runs each in a free kernel slot."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from service import db
from service.events import RunEvents
from service.keys import CONFIG, CONSUMER, CONSUMER_TASK, DB, EVENTS, LEASES, METRICS, POOL
from service.leases import Leases
from service.metrics import Metrics
from service.models import Calculation, Status
from service.pool import KernelDied, KernelPool, KernelStopped, Slot
from service.worker import Stored, compute_and_store

log = logging.getLogger(__name__)

CANCEL, TIME_LIMIT, SHUTDOWN = "cancel", "time limit", "shutdown"
RETRY_DELAY = 1.0  # seconds between attempts to record an outcome while the database is down
SHUTDOWN_PATIENCE = 5.0  # seconds, at most, a shutdown waits for the database to requeue a run
STORAGE_PAUSE = 5.0  # seconds without claims after a result found the disk full


class Consumer:
    """Keeps every kernel slot busy while runs are queued, and records how each run ends."""

    def __init__(
        self,
        database: db.Database,
        events: RunEvents,
        leases: Leases,
        pool: KernelPool,
        metrics: Metrics,
        *,
        kernel_delay: float = 0.0,
        kernel_timeout: float | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        self._db = database
        self._events = events
        self._leases = leases  # whose worker id each claim records
        self._metrics = metrics
        self._kernel_delay = kernel_delay
        self._kernel_timeout = kernel_timeout
        self._poll_interval = poll_interval
        self._free = list(reversed(pool.slots))
        self._wakeup = asyncio.Event()
        self._computing: dict[int, Slot] = {}
        self._held: set[int] = set()  # runs this consumer claimed, from the claim to the end
        self._unanswered = False  # a claim failed with the database: it may have been made
        self._stop_reasons: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._swept = 0.0  # when runs cancelled elsewhere were last looked for
        self._down = False  # whether the database was found down at the last look
        self._paused_until = 0.0  # no claims before this loop time: the disk was full
        self._draining = False  # shutting down: a run that ends claims no other
        self._requeue_patience = SHUTDOWN_PATIENCE  # how long a shutdown tries to requeue
        self._wakeups = 0  # how many times a claim was called for, to tell if one came since
        events.on_queued.append(self.notify)
        events.on_cancelled.append(self.stop)

    def notify(self) -> None:
        self._wakeups += 1
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            # Cleared before draining, so a run submitted mid-drain still wakes the next wait.
            self._wakeup.clear()
            try:
                await self._fill_free_slots()
            except db.DatabaseDown as exc:
                # Running kernels go on; their outcomes are recorded once it is back.
                if not self._down:
                    log.warning("the database is down (%s); claims wait for it", exc)
                self._down = True
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
            # arrives as the wake-up does (a notice from the database at shutdown), and the
            # shutdown then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()

    async def _fill_free_slots(self) -> None:
        if asyncio.get_running_loop().time() < self._paused_until:
            return  # the disk was full: a claim now would compute a result with no room
        while self._free:
            calc = await self.claim()
            if self._down:
                log.info("the database is back; claiming again")
                self._down = False
            if calc is None:
                break
            task = asyncio.create_task(self._execute(self._free.pop(), calc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._stop_cancelled_elsewhere()

    async def _stop_cancelled_elsewhere(self) -> None:
        """A cancel sent to another process reaches the run's row, and on PostgreSQL a notice
        that stops the kernel at once (`RunEvents.cancelled`). Where no notice comes (SQLite,
        or one lost while the database was away), the kernel is stopped here at the next
        look, one every POLL_INTERVAL at the most (a wake-up per create must not cost a read
        each)."""
        now = asyncio.get_running_loop().time()
        if self._computing and now - self._swept >= self._poll_interval:
            self._swept = now
            for calc_id in await self._db.cancelled_among(list(self._computing)):
                self._kill(calc_id, CANCEL)

    async def claim(self) -> Calculation | None:
        """The oldest queued run, claimed under this process's worker record; a record the
        database forgot (taken for gone while cut off) is made anew first. After a claim
        that failed with the database, what it may have claimed goes back to the queue
        first: its answer lost, no kernel would compute it while this process lives."""
        if self._unanswered:
            held = sorted(self._held)
            requeued = await self._db.requeue_unheld(self._leases.worker_id, held)
            self._unanswered = False
            for calc_id in requeued:
                log.warning(
                    "calculation %d was claimed as the database went away, its answer lost;"
                    " it is queued again",
                    calc_id,
                    extra={"calc_id": calc_id},
                )
        try:
            try:
                calc = await self._db.claim(self._leases.worker_id)
            except db.WorkerGone as gone:
                await self._leases.register_again(gone.worker_id)
                calc = await self._db.claim(self._leases.worker_id)
        except db.DatabaseDown:
            self._unanswered = True
            raise
        if calc is not None:
            self._held.add(calc.id)
        return calc

    async def run_once(self) -> bool:
        """Claim the oldest queued run and compute it here, and no other; False when the
        queue is empty."""
        calc = await self.claim()
        if calc is None:
            return False
        await self._execute(self._free.pop(), calc, chain=False)
        return True

    def stop(self, calc_id: int) -> bool:
        """End the kernel process computing this run, if one is; True if one was."""
        return self._kill(calc_id, CANCEL)

    async def drain(self, grace: float) -> None:
        """Let running kernels finish for up to `grace` seconds, then stop them; what was cut
        off goes back to the queue without counting as an attempt."""
        self._draining = True
        # An operator who gave a short grace wants a quick stop, database or not.
        self._requeue_patience = min(SHUTDOWN_PATIENCE, grace)
        if self._tasks:
            log.info("waiting up to %.0f s for %d running calculation(s)", grace, len(self._tasks))
            await asyncio.wait(self._tasks, timeout=grace)
        for calc_id in list(self._computing):
            self._kill(calc_id, SHUTDOWN)
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _kill(self, calc_id: int, reason: str) -> bool:
        slot = self._computing.get(calc_id)
        if slot is None:
            return False
        self._stop_reasons[calc_id] = reason
        slot.kill()
        return True

    async def _execute(self, slot: Slot, calc: Calculation, chain: bool = True) -> None:
        """The run, then each run the kernel process claims as it stores the one before;
        one it claimed as the shutdown began goes back to the queue, not computed."""
        claimed = await self._attempt(slot, calc, chain)
        while claimed is not None:
            if self._draining:
                self._free.append(slot)
                await self._requeue_at_shutdown(claimed)
                return
            claimed = await self._attempt(slot, claimed, chain)

    async def _attempt(self, slot: Slot, calc: Calculation, chain: bool) -> Calculation | None:
        """One run in the slot, and how it ended recorded. The run the kernel process
        claimed for the slot in the same commit as this one's result (PostgreSQL), which
        keeps the slot; else None, and the slot is free."""
        log.info("calculation %d started (attempt %d)", calc.id, calc.attempts, extra=ids(calc))
        self._computing[calc.id] = slot
        looks = chain and self._db.claims_on_store and not self._draining
        claim_for = self._leases.worker_id if looks else None
        wakeups = self._wakeups
        try:
            outcome = await self._compute(slot, calc, claim_for)
        except BaseException:
            self._free.append(slot)
            raise
        finally:
            self._computing.pop(calc.id, None)
            self._held.discard(calc.id)
            reason = self._stop_reasons.pop(calc.id, None)
        output = outcome.output
        claimed = output.claimed if isinstance(output, Stored) else None
        if claimed is None:
            # Free before the outcome is written: the next run starts computing meanwhile.
            self._free.append(slot)
            # No claim is needed if the kernel process found the queue empty, unless a run
            # was queued since its statement may have looked.
            looked = isinstance(output, Stored) and output.looked
            if not looked or self._wakeups != wakeups:
                self.notify()
        try:
            if isinstance(output, Stored):  # written by the kernel process already
                self._record_done(calc, output)
            else:
                await asyncio.shield(self._record_failure(calc, output, outcome, reason))
        finally:
            self._events.ended(calc.id)
        return claimed

    async def _compute(self, slot: Slot, calc: Calculation, claim_for: int | None) -> Outcome:
        timer = None
        started = time.perf_counter()
        try:
            await slot.ready()
            if self._kernel_timeout is not None:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(self._kernel_timeout, self._kill, calc.id, TIME_LIMIT)
            started = time.perf_counter()
            output: Stored | Exception = await slot.run(
                compute_and_store,
                calc.id,
                calc.attempts,
                calc.date_start,
                calc.date_fin,
                calc.lag,
                calc.seed,
                self._kernel_delay,
                claim_for,
            )
        except Exception as exc:
            output = exc
        finally:
            if timer is not None:
                timer.cancel()
        return Outcome(output, time.perf_counter() - started, db.utcnow())

    def _record_done(self, calc: Calculation, stored: Stored) -> None:
        self._db.disk.wrote()
        if stored.stored:  # with the kernel's own time
            log.info("calculation %d done in %.3f s", calc.id, stored.duration, extra=ids(calc))
            self._metrics.finished(Status.DONE, stored.duration)

    async def _requeue_at_shutdown(self, calc: Calculation) -> None:
        # Not waited for long: a run left running by a process that is gone is rescued by
        # the next process that looks (its pid no longer runs it).
        requeue = functools.partial(self._db.requeue, calc)
        if await until_recorded(requeue, patience=self._requeue_patience):
            log.info(
                "calculation %d stopped by the shutdown, queued again", calc.id, extra=ids(calc)
            )

    async def _record_failure(
        self, calc: Calculation, exc: Exception, outcome: Outcome, reason: str | None
    ) -> None:
        if reason == SHUTDOWN:
            await self._requeue_at_shutdown(calc)
            return
        if reason == CANCEL:
            log.info("calculation %d cancelled while running", calc.id, extra=ids(calc))
            return
        if isinstance(exc, db.StorageFull):
            # Not the run's fault: it waits in the queue, its attempt not counted, and no
            # run is claimed for a while (said once, by the disk's state).
            self._db.disk.refused(exc)  # this process's state: the kernel's write was refused
            self._paused_until = asyncio.get_running_loop().time() + STORAGE_PAUSE
            if await until_recorded(functools.partial(self._db.requeue, calc)):
                log.debug("calculation %d not stored: queued again", calc.id, extra=ids(calc))
            return
        if reason == TIME_LIMIT:
            message = f"stopped after the time limit of {self._kernel_timeout:g} s"
        elif isinstance(exc, KernelDied):
            message = "the kernel process died while computing this run"
        elif isinstance(exc, KernelStopped):  # pragma: no cover (every stop has a reason)
            message = "the kernel process was stopped"
        else:
            log.error("calculation %d: the kernel raised", calc.id, exc_info=exc, extra=ids(calc))
            message = f"{type(exc).__name__}: {exc}"
        fail = functools.partial(
            self._db.mark_failed, calc, message, outcome.duration, outcome.ended_at
        )
        if await until_recorded(fail):
            log.info("calculation %d failed: %s", calc.id, message, extra=ids(calc))
            self._metrics.finished(Status.FAILED, outcome.duration)


async def until_recorded(
    write: Callable[[], Awaitable[bool]], patience: float | None = None
) -> bool:
    """A fenced write, tried again while the database is down (for up to `patience`
    seconds, if given): an outcome is never lost."""
    deadline = None if patience is None else time.monotonic() + patience
    while True:
        try:
            return await write()
        except db.DatabaseDown:
            if deadline is not None and time.monotonic() > deadline:
                log.warning("the database is down: the run is left to be rescued")
                return False
            await asyncio.sleep(RETRY_DELAY)


class Outcome(NamedTuple):
    """How one attempt ended: what the kernel process stored, or what it raised, and when
    the consumer saw it end (the time a failure is recorded with)."""

    output: Stored | Exception
    duration: float
    ended_at: str


def ids(calc: Calculation) -> dict[str, int]:
    """What a log line about a run carries as fields of its own."""
    return {"calc_id": calc.id}


async def pool_context(app: web.Application) -> AsyncIterator[None]:
    pool = KernelPool(app[CONFIG].workers, app[CONFIG].database_url)
    pool.start()
    app[POOL] = pool
    yield
    await pool.close()


async def consumer_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    consumer = Consumer(
        app[DB],
        app[EVENTS],
        app[LEASES],
        app[POOL],
        app[METRICS],
        kernel_delay=config.kernel_delay,
        kernel_timeout=config.kernel_timeout,
        poll_interval=config.poll_interval,
    )
    app[CONSUMER] = consumer
    task = asyncio.create_task(consumer.run(), name="consumer")
    app[CONSUMER_TASK] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.drain(config.shutdown_grace)


async def release_waiters(app: web.Application) -> None:
    """On shutdown: answer requests waiting for runs now, instead of after their wait."""
    app[EVENTS].wake_all()

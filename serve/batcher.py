"""Dynamic batching: a bounded asyncio queue, one dispatcher coroutine, one worker thread.

The dispatcher takes the oldest job, waits up to `max_wait_s` for more jobs with the same key (up to
`max_batch` images), and hands the batch to the single worker thread that owns the models. While the
worker runs, new requests queue up and form the next batch. Jobs with another key wait, in order, in
`held`. Every accepted job's future is resolved exactly once: a result, an exception, or (when its
request timed out first) nothing, and the worker skips jobs whose request is gone.
"""

import asyncio
import collections
import concurrent.futures
import logging

from pstyle.serve.errors import ApiError

log = logging.getLogger('pstyle.serve')
POLL_S = 0.001  # Queue polling while a batch waits for company (asyncio.wait_for on Queue.get can drop an item on 3.11).


class Batcher:
    def __init__(self, run_batch, max_batch, max_wait_s, queue_size, metrics=None):
        self.run_batch = run_batch        # [job] -> [result or Exception], on the worker thread.
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.metrics = metrics
        self.queue = None
        self.held = collections.deque()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='pstyle-worker')
        self._task = None

    def start(self):
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    def queue_length(self):
        return (self.queue.qsize() if self.queue is not None else 0) + len(self.held)

    async def submit(self, job, timeout_s):
        """The job's result; ApiError 503 when the queue is full, 504 after `timeout_s`."""
        job.future = asyncio.get_running_loop().create_future()
        job.gone = False
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ApiError(503, 'queue_full', f'the server is busy ({self.queue_size} requests queued); retry shortly',
                           headers={'Retry-After': '1'}) from None
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except asyncio.TimeoutError:
            job.gone = True
            raise ApiError(504, 'timeout', f'no result within {timeout_s:g} s') from None
        except asyncio.CancelledError:
            job.gone = True  # The client went away.
            raise

    # -- dispatcher -------------------------------------------------------------------------------
    async def _dispatch(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(loop)
            batch = [job for job in batch if not job.gone]
            if not batch:
                continue
            if self.metrics is not None:
                self.metrics.observe_batch(sum(job.size for job in batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, batch)
            except Exception as e:  # noqa: BLE001 -- run_batch does not raise; this keeps the loop alive if it does
                log.exception('batch failed')
                results = [e] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done() or job.gone:  # Its request was answered already (504) or left.
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _collect(self, loop):
        """The next batch: the oldest job and up to max_batch images of jobs with its key."""
        first = self.held.popleft() if self.held else await self.queue.get()
        batch, size = [first], first.size
        for job in list(self.held):  # Same-key jobs already waiting go first.
            if size + job.size > self.max_batch:
                break
            if job.key == first.key:
                self.held.remove(job)
                batch.append(job)
                size += job.size
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch and len(self.held) < self.max_batch:
            if self.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, POLL_S))
                continue
            job = self.queue.get_nowait()
            if job.key == first.key and size + job.size <= self.max_batch:
                batch.append(job)
                size += job.size
            else:
                self.held.append(job)
        return batch

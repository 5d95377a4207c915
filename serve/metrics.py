"""Prometheus text exposition (format 0.0.4), written here rather than with prometheus_client: four
metric families do not need a dependency, and a registry per app (not the library's process-global one)
lets tests and benchmarks run several servers in one process."""

import bisect
import collections
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # The last is +Inf.
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name, labels=''):
        out, running = [], 0
        sep = ',' if labels else ''
        for bound, n in zip(self.buckets + (float('inf'),), self.counts):
            running += n
            le = '+Inf' if bound == float('inf') else f'{bound:g}'
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f'{{{labels}}}' if labels else ''
        out += [f'{name}_sum{braces} {self.sum:.6f}', f'{name}_count{braces} {self.count}']
        return out


class Metrics:
    def __init__(self, queue_length=lambda: 0):
        self.queue_length = queue_length
        self.requests = collections.Counter()     # (route, status) -> n
        self.errors = collections.Counter()       # kind -> n
        self.latency = {}                         # route -> Histogram
        self.batches = Histogram(BATCH_BUCKETS)
        self._lock = threading.Lock()

    def observe_request(self, route, status, seconds):
        with self._lock:
            self.requests[(route, int(status))] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_error(self, kind):
        with self._lock:
            self.errors[kind] += 1

    def observe_batch(self, images):
        with self._lock:
            self.batches.observe(images)

    def render(self):
        with self._lock:
            lines = ['# HELP pstyle_requests_total HTTP requests by route and status.',
                     '# TYPE pstyle_requests_total counter']
            lines += [f'pstyle_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
            lines += ['# HELP pstyle_request_seconds Request latency by route.', '# TYPE pstyle_request_seconds histogram']
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines('pstyle_request_seconds', f'route="{route}"')
            lines += ['# HELP pstyle_batch_images Images per generator pass.', '# TYPE pstyle_batch_images histogram']
            lines += self.batches.lines('pstyle_batch_images')
            lines += ['# HELP pstyle_queue_length Requests waiting for the worker.', '# TYPE pstyle_queue_length gauge',
                      f'pstyle_queue_length {self.queue_length()}']
            lines += ['# HELP pstyle_errors_total Failed requests by kind.', '# TYPE pstyle_errors_total counter']
            lines += [f'pstyle_errors_total{{kind="{k}"}} {n}' for k, n in sorted(self.errors.items())]
        return '\n'.join(lines) + '\n'

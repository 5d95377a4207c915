"""`pstyle serve --ray`: the same FastAPI app as a Ray Serve deployment, for more than one process or machine.

Each replica builds the app (`create_app`) in its own process and loads the models before Ray routes to it.
Batching is Ray's `@serve.batch` with the server's max batch and max wait: Ray hands a replica the calls
that arrived together, they are split by job key (style, row weights, inversion) and each group runs as in
a plain `pstyle serve` (`jobs.run_batch` on the replica's one worker thread, fixed-size passes), so every
answer is the one a plain server gives. Responses name their replica in `X-PStyle-Replica`.

`build_app(cfg, RayOptions)` is what `pstyle serve --ray` runs; `app_builder(args)` is the entry point of
`serve run serve/ray_serve.yaml` (Ray's config files give an application builder a dict of arguments).
Ray is an optional extra (`.[ray]`), imported by the CLI only with `--ray`.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import os
import signal
import socket
import threading

import ray
from ray import serve

from pstyle.serve import config as C
from pstyle.serve.app import create_app
from pstyle.serve.errors import ApiError

DEPLOYMENT = 'pstyle'


@dataclasses.dataclass
class RayOptions:
    replicas:           int = 1         # Fixed replica count; the autoscaling minimum with max_replicas.
    num_cpus:           float = 1.0     # CPUs Ray reserves per replica (ray_actor_options).
    num_gpus:           float = 0.0     # GPUs per replica (one per GPU: 1).
    max_replicas:       int = None      # Autoscale between `replicas` and this (None: no autoscaling).
    target_ongoing:     float = None    # Autoscaling target of requests in flight per replica (None: 2 x max batch).
    address:            str = None      # ray.init address: 'auto' joins a running cluster; None starts one here.

    def check(self):
        if self.replicas < 1 or self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f'--replicas must be >= 1 and --num-cpus/--num-gpus >= 0, got {self.replicas}, '
                             f'{self.num_cpus}, {self.num_gpus}')
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f'--max-replicas {self.max_replicas} is below --replicas {self.replicas}')
        return self

    def deployment_options(self, cfg):
        """serve.deployment keyword arguments. A replica takes up to queue_size requests at once (Ray's default
        of 5 would cap a batch at 5); past that, Ray's own queue answers 503."""
        out = dict(name=DEPLOYMENT, ray_actor_options=dict(num_cpus=self.num_cpus, num_gpus=self.num_gpus),
                   max_ongoing_requests=cfg.queue_size, max_queued_requests=cfg.queue_size)
        if self.max_replicas is None:
            out['num_replicas'] = self.replicas
        else:
            out['autoscaling_config'] = dict(min_replicas=self.replicas, max_replicas=self.max_replicas,
                                             target_ongoing_requests=self.target_ongoing or 2 * cfg.max_batch)
        return out


class RayBatcher:
    """The Batcher's interface (start, stop, submit, queue_length) over Ray Serve's @serve.batch."""

    def __init__(self, run_batch, cfg, metrics=None):
        self.run_batch, self.metrics = run_batch, metrics
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='pstyle-worker')
        self.waiting = 0
        self._batched = serve.batch(max_batch_size=cfg.max_batch, batch_wait_timeout_s=cfg.max_wait_ms / 1000)(self._run)

    def start(self):
        pass

    async def stop(self):
        self.executor.shutdown(wait=True, cancel_futures=True)

    def queue_length(self):
        return self.waiting

    async def submit(self, job, timeout_s):
        """The job's result; ApiError 504 after `timeout_s` (Ray drops a cancelled call from its batch)."""
        job.gone = False
        self.waiting += 1
        try:
            result = await asyncio.wait_for(self._batched(job), timeout_s)
        except asyncio.TimeoutError:
            job.gone = True
            raise ApiError(504, 'timeout', f'no result within {timeout_s:g} s') from None
        finally:
            self.waiting -= 1
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run(self, batch):
        """[job] as Ray batched them -> [result or exception]: one worker pass per group of same-key jobs."""
        loop = asyncio.get_running_loop()
        out = [None] * len(batch)
        groups = collections.defaultdict(list)
        for i, job in enumerate(batch):
            groups[job.key].append(i)
        for members in groups.values():
            live = [i for i in members if not batch[i].gone]
            if not live:
                continue
            if self.metrics is not None:
                self.metrics.observe_batch(sum(batch[i].size for i in live))
            results = await loop.run_in_executor(self.executor, self.run_batch, [batch[i] for i in live])
            for i, result in zip(live, results):
                out[i] = result
        return out


def replica_name():
    """This replica's id (Ray's replica id, else host:pid)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 -- outside a replica, or another Ray version's context
        return f'{socket.gethostname()}:{os.getpid()}'


def build_app(cfg, options=None):
    """A Ray Serve application of the FastAPI app: `serve.run(build_app(cfg, RayOptions(replicas=2)))`."""
    cfg.check()
    options = (options or RayOptions()).check()

    def asgi_app():  # Runs on each replica: its models, batcher and worker thread live there.
        return create_app(cfg, make_batcher=RayBatcher, replica=replica_name(), load_in_background=False)
    return serve.deployment(serve.ingress(asgi_app)(), **options.deployment_options(cfg)).bind()


def app_builder(args):
    """`serve run` entry point (serve/ray_serve.yaml): the application of `config_from_args(args)`."""
    return build_app(*config_from_args(args))


def config_from_args(args):
    """(ServeConfig, RayOptions) from `serve run` arguments: {"config": styles.json, or "base", "styled",
    "encoder", "mapping"; any ServeConfig field; "replicas", "num_cpus", "num_gpus", "max_replicas",
    "target_ongoing"}. Without networks, the demo networks with the pixel loss, as `pstyle serve`."""
    args = dict(args or {})
    ray_keys = {f.name for f in dataclasses.fields(RayOptions)} - {'address'}
    options = RayOptions(**{k: args.pop(k) for k in list(args) if k in ray_keys}).check()
    networks = {k: args.pop(k, None) for k in ('base', 'styled', 'config', 'encoder')}
    styles = C.make_styles(mapping=args.pop('mapping', 'from-a'), **networks)
    if C.is_default(networks['base'], networks['config']) and 'lpips_weight' not in args and 'mse_weight' not in args:
        args.update(C.DEMO_PROJECTION)  # The demo networks offline: no LPIPS weights to load.
    args.setdefault('api_key', os.environ.get(C.API_KEY_ENV) or None)
    unknown = sorted(set(args) - {f.name for f in dataclasses.fields(C.ServeConfig)})
    if unknown:
        raise ValueError(f'unknown serve arguments {unknown}')
    return C.ServeConfig(styles=styles, **args).check(), options


def run(cfg, options, log=print):
    """Start (or join, with options.address) Ray, serve the app on cfg.host:cfg.port, block until SIGINT/SIGTERM,
    then take the application down (and Serve and the local Ray instance, when this call started them)."""
    stop = threading.Event()
    ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    for sig in (signal.SIGINT, signal.SIGTERM):  # After ray.init, which installs its own (aborting) handlers.
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options=dict(host=cfg.host, port=cfg.port))
        serve.run(build_app(cfg, options), name=DEPLOYMENT, route_prefix='/')
        log(f'serving {", ".join(s.name for s in cfg.styles)} on http://{cfg.host}:{cfg.port} through Ray Serve '
            f'({options.replicas}{"-" + str(options.max_replicas) if options.max_replicas else ""} replicas)')
        stop.wait()
    finally:
        if options.address is None:
            serve.shutdown()
        else:
            serve.delete(DEPLOYMENT)  # A shared cluster: only this application goes.
        ray.shutdown()

"""`pstyle serve`: a thin shell over `serve/` (the FastAPI app, run by uvicorn)."""

import os

import click

from pstyle.serve import config as C


def build_config(base, styled, config, mapping, api_key, cors_origin, encoder=None, **kw):
    """Command options -> a checked ServeConfig (ValueError with the reason)."""
    styles = C.make_styles(base=base, styled=styled, config=config, mapping=mapping, encoder=encoder)
    if C.is_default(base, config) and styled is None and kw.get('lpips_weight') is None and kw.get('mse_weight') is None:
        kw.update(C.DEMO_PROJECTION)  # The demo networks offline: no LPIPS weights to load.
    api_key = api_key or os.environ.get(C.API_KEY_ENV) or None
    return C.ServeConfig(styles=styles, api_key=api_key, cors_origins=tuple(cors_origin), **kw).check()


@click.command()
@click.option('--base', default=None, help='Model A: photos are projected into it (file, URL or short name) [default: the shipped demo, styled by demo-toon].')
@click.option('--styled', default=None, help='Model B, fine-tuned from A: the style.')
@click.option('--config', 'config', type=click.Path(exists=True, dir_okay=False), default=None, help='Several named styles: styles.json (see the README).')
@click.option('--encoder', default=None, help='Encoder of the base (file, URL or short name; `pstyle train-encoder` makes one): photos are inverted with it by default (invert=encoder).')
@click.option('--mapping', type=click.Choice(['from-a', 'from-b', 'blend']), default='from-a', show_default=True, help='With --base/--styled: mapping network of the blend.')
@click.option('--host', default='127.0.0.1', show_default=True, help='Bind address; anything but loopback needs --api-key.')
@click.option('--port', type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option('--max-batch', type=click.IntRange(min=1), default=8, show_default=True, help='Images per generator pass.')
@click.option('--max-wait-ms', type=click.FloatRange(min=0), default=10, show_default=True, help='How long a batch waits for more requests.')
@click.option('--queue-size', type=click.IntRange(min=1), default=64, show_default=True, help='Waiting requests; more get 503 + Retry-After.')
@click.option('--pad-batch/--no-pad-batch', default=True, show_default=True, help='Render every pass at --max-batch images: results bit-identical alone or batched (CPU).')
@click.option('--timeout', 'timeout_s', type=click.FloatRange(min=0, min_open=True), default=120, show_default=True, help='Seconds per request, queueing included (504 after).')
@click.option('--max-upload-mb', type=click.FloatRange(min=0, min_open=True), default=10, show_default=True, help='Largest photo upload (413 above).')
@click.option('--max-pixels', type=click.IntRange(min=1), default=40_000_000, show_default=True, help='Largest photo in pixels (413 above).')
@click.option('--max-seeds', type=click.IntRange(min=1), default=64, show_default=True, help='Seeds per /v1/generate request.')
@click.option('--api-key', default=None, help=f'Required from clients (Authorization: Bearer KEY or X-API-Key); also ${C.API_KEY_ENV}.')
@click.option('--cors-origin', multiple=True, help='Allow this browser origin (repeatable); CORS is off by default.')
@click.option('--project-preset', type=click.Choice(['fast', 'default', 'best']), default='default', show_default=True, help='Projection preset of /v1/stylize (pivotal tuning is not served).')
@click.option('--steps', type=click.IntRange(min=1), default=None, help='Default projection steps (the preset\'s otherwise).')
@click.option('--max-steps', type=click.IntRange(min=1), default=1000, show_default=True, help='Upper bound of a request\'s `steps`.')
@click.option('--lpips-weight', type=click.FloatRange(min=0), default=None, help='Projection LPIPS weight (0 = no LPIPS, e.g. offline).')
@click.option('--mse-weight', type=click.FloatRange(min=0), default=None, help='Projection pixel MSE weight.')
@click.option('--precision', type=click.Choice(['fp32', 'bf16', 'fp16']), default=None, help='Projection precision [fp32].')
@click.option('--landmarks', type=click.Path(dir_okay=False), default=None, help='dlib 68-point landmark model.')
@click.option('--device', default='auto', show_default=True)
@click.option('--log-level', type=click.Choice(['critical', 'error', 'warning', 'info', 'debug']), default='info', show_default=True)
@click.option('--ray', 'use_ray', is_flag=True, help='Deploy on Ray Serve (extra [ray]): replicas in other processes or machines.')
@click.option('--replicas', type=click.IntRange(min=1), default=1, show_default=True, help='With --ray: replicas (the autoscaling minimum with --max-replicas).')
@click.option('--num-cpus', type=click.FloatRange(min=0), default=1, show_default=True, help='With --ray: CPUs reserved per replica.')
@click.option('--num-gpus', type=click.FloatRange(min=0), default=0, show_default=True, help='With --ray: GPUs per replica (1 = one replica per GPU).')
@click.option('--max-replicas', type=click.IntRange(min=1), default=None, help='With --ray: autoscale between --replicas and this.')
@click.option('--target-ongoing', type=click.FloatRange(min=0, min_open=True), default=None, help='With --ray: autoscaling target of requests in flight per replica [2 x --max-batch].')
@click.option('--ray-address', default=None, help="With --ray: a running Ray cluster ('auto' = the one `ray start` made here); default: start one.")
def serve(log_level, use_ray, replicas, num_cpus, num_gpus, max_replicas, target_ongoing, ray_address, **kw):
    """HTTP API with dynamic batching and a web page: /v1/stylize, /v1/generate, /healthz, /metrics, /."""
    try:
        import uvicorn
        from pstyle.serve.app import create_app  # optional extra [serve]: FastAPI is imported only here
    except ImportError as e:
        raise click.ClickException(f'{e}; install the server: pip install "portrait-stylegan[serve]"') from None
    try:
        cfg = build_config(**kw)
        if use_ray:
            return _serve_on_ray(cfg, replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus,
                                 max_replicas=max_replicas, target_ongoing=target_ongoing, address=ray_address)
        app = create_app(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f'serving {", ".join(s.name for s in cfg.styles)} on http://{cfg.host}:{cfg.port} (models load in the background; see /healthz)')
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=log_level in ('info', 'debug'))


def _serve_on_ray(cfg, **options):
    try:
        from pstyle.serve import ray_app  # optional extra [ray]: Ray is imported only here
    except ImportError as e:
        raise click.ClickException(f'{e}; install Ray Serve: pip install "portrait-stylegan[ray]"') from None
    ray_app.run(cfg, ray_app.RayOptions(**options).check(), log=click.echo)

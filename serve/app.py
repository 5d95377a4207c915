"""The FastAPI application: routes, authentication, limits, metrics and the model-loading lifecycle.

Handlers check and decode a request in memory, then hand one job to the batcher and wait; only the
worker thread touches the models. Every failure is an ApiError with a status, a metrics kind and a
message, answered as JSON {"error": kind, "detail": message}.
"""

import asyncio
import base64
import contextlib
import hmac
import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from PIL import Image

from pstyle.stylize.files import jsonable
from pstyle.models import render as gen

from pstyle.serve import config as C
from pstyle.serve import inputs, jobs
from pstyle.serve.batcher import Batcher
from pstyle.serve.errors import ApiError
from pstyle.serve.metrics import Metrics
from pstyle.serve.models import ModelStore

log = logging.getLogger('pstyle.serve')
PAGE = Path(__file__).with_name('static') / 'index.html'
REPLICA_HEADER = 'X-PStyle-Replica'
ROUTES = ('/', '/healthz', '/metrics', '/v1/styles', '/v1/stylize', '/v1/generate')


class State:
    """What the routes share: config, models, batcher, metrics, and the loading status."""

    def __init__(self, cfg, make_batcher=None, replica=None):
        self.cfg = cfg
        self.store = ModelStore(cfg)
        self.metrics = Metrics()
        run_batch = lambda batch: jobs.run_batch(self.store, batch)  # noqa: E731
        if make_batcher is None:
            self.batcher = Batcher(run_batch, cfg.max_batch, cfg.max_wait_ms / 1000, cfg.queue_size, self.metrics)
        else:
            self.batcher = make_batcher(run_batch, cfg, self.metrics)
        self.metrics.queue_length = self.batcher.queue_length
        self.status, self.reason = 'loading', None
        self.replica = replica            # Set on Ray Serve replicas: sent as X-PStyle-Replica.

    def load(self):
        try:
            self.store.load()
            self.status = 'ok' if self.store.inversion_error is None else 'degraded'
            self.reason = self.store.inversion_error
        except Exception as e:  # noqa: BLE001 -- reported by /healthz, the process stays up to say why
            log.exception('loading the models failed')
            self.status, self.reason = 'failed', f'{type(e).__name__}: {e}'

    def require_ready(self):
        if self.status in ('loading', 'failed'):
            raise ApiError(503, 'unavailable', 'the models are still loading' if self.status == 'loading'
                           else f'the models failed to load: {self.reason}', headers={'Retry-After': '5'})

    def style(self, name):
        if name in (None, ''):
            return next(iter(self.store.styles.values()))
        if name not in self.store.styles:
            raise ApiError(422, 'bad_spec', f'unknown style {name!r}; choose one of {", ".join(self.store.styles)}')
        return self.store.styles[name]


def create_app(cfg, make_batcher=None, replica=None, load_in_background=True):
    """The FastAPI app. `make_batcher(run_batch, cfg, metrics)` replaces the asyncio Batcher (Ray Serve's
    batching); without `load_in_background` the models load before the app starts answering (a Ray replica
    is routed to once started)."""
    cfg.check()
    state = State(cfg, make_batcher, replica)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        loading = asyncio.create_task(asyncio.to_thread(state.load))
        if not load_in_background:
            await loading
        yield
        await loading
        await state.batcher.stop()

    app = FastAPI(title='portrait-stylegan', lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pstyle = state
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=['GET', 'POST'],
                           allow_headers=['Authorization', 'X-API-Key', 'Content-Type', 'Accept'])
    _add_middleware(app, state)
    _add_routes(app, state)
    return app


def _add_middleware(app, state):
    @app.middleware('http')
    async def measure(request, call_next):
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in ROUTES else 'other'
        try:
            if route not in ('/', '/healthz') and request.method != 'OPTIONS':
                _check_key(state.cfg.api_key, request)
            response = await call_next(request)
        except ApiError as e:
            response = _error(state, e)
        state.metrics.observe_request(route, response.status_code, time.perf_counter() - t0)
        if state.replica is not None:
            response.headers[REPLICA_HEADER] = state.replica
        return response


def _check_key(api_key, request):
    """Authorization: Bearer KEY or X-API-Key: KEY, compared in constant time."""
    if not api_key:
        return
    given = request.headers.get('x-api-key')
    auth = request.headers.get('authorization', '')
    if given is None and auth.lower().startswith('bearer '):
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, 'unauthorized', 'missing or wrong API key: send "Authorization: Bearer KEY" or "X-API-Key: KEY"',
                       headers={'WWW-Authenticate': 'Bearer'})


def _error(state, e):
    state.metrics.observe_error(e.kind)
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _add_routes(app, state):
    cfg = state.cfg

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return _error(state, e)

    @app.get('/', response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text())

    @app.get('/healthz')
    async def healthz():
        body = dict(status=state.status, reason=state.reason, device=str(state.store.device),
                    max_batch=cfg.max_batch, styles={n: s.describe()['networks'] for n, s in state.store.styles.items()})
        return JSONResponse(body, status_code=200 if state.status == 'ok' else 503)

    @app.get('/metrics')
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type='text/plain; version=0.0.4')

    @app.get('/v1/styles')
    async def styles():
        state.require_ready()
        return dict(styles=[s.describe() for s in state.store.styles.values()], max_steps=cfg.max_steps,
                    steps=state.store.project_cfg.num_steps, inversion_error=state.store.inversion_error)

    @app.post('/v1/stylize')
    async def stylize(request: Request):
        state.require_ready()
        body = await inputs.read_body(request, int(cfg.max_upload_mb * 2**20), inputs.FORM_SLACK)
        fields = inputs.parse_multipart(body, request.headers.get('content-type'))
        job = _stylize_job(state, fields)
        reason = state.store.unavailable(job.style, job.invert)
        if reason is not None:
            raise ApiError(503, 'unavailable', reason)
        result = await _run(state, job)
        return _stylize_response(request, result)

    @app.post('/v1/generate')
    async def generate(request: Request):
        state.require_ready()
        body = await inputs.read_body(request, 1 << 20)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise ApiError(400, 'bad_request', f'the body is not JSON ({e})') from None
        job = _generate_job(state, data)
        images = await _run(state, job)
        return _generate_response(request, job, images)


async def _run(state, job):
    """The job's result; a failure that is not an ApiError becomes one (500, or 503 out of memory), logged
    without the request's data."""
    try:
        return await state.batcher.submit(job, state.cfg.timeout_s)
    except ApiError:
        raise
    except torch.OutOfMemoryError as e:
        raise ApiError(503, 'out_of_memory', f'out of memory on {state.store.device}; retry with fewer images ({e})',
                       headers={'Retry-After': '5'}) from None
    except Exception as e:  # noqa: BLE001 -- one failing request is answered, the server goes on
        log.error('request failed: %s: %s', type(e).__name__, e)
        raise ApiError(500, 'internal', f'{type(e).__name__}: {e}') from None


# ----------------------------------------------------------------------------
# Requests -> jobs.

def _stylize_job(state, raw):
    cfg = state.cfg
    if len(raw.get('image', b'')) > cfg.max_upload_mb * 2**20:
        raise inputs.too_large(len(raw['image']), int(cfg.max_upload_mb * 2**20))
    if 'image' not in raw:
        raise ApiError(400, 'bad_request', 'no "image" field in the form')
    fields = {k: v.decode('utf-8', 'replace') for k, v in raw.items() if k != 'image'}
    style = state.style(fields.get('style'))
    invert = _invert_of(style, fields.get('invert'))
    steps = inputs.as_number(fields.get('steps'), 'steps', int)
    if steps is not None and not 1 <= steps <= cfg.max_steps:
        raise ApiError(422, 'bad_spec', f'steps must be in [1, {cfg.max_steps}] on this server, got {steps}')
    align = inputs.as_bool(fields.get('align', 'true'), 'align')
    paste_back = inputs.as_bool(fields.get('paste_back', 'false'), 'paste_back')
    if paste_back and not align:
        raise ApiError(422, 'bad_spec', 'paste_back needs align=true (the alignment says where the face goes)')
    spec = inputs.spec_from_fields(fields, style.default_spec)
    weights = inputs.resolve(style, spec)
    photo = inputs.decode_image(raw['image'], cfg.max_pixels)
    return jobs.StylizeJob(style=style, spec=spec, weights=weights, photo=photo, align=align, invert=invert,
                           steps=None if invert == 'encoder' else steps, paste_back=paste_back)


def _invert_of(style, value):
    """The request's `invert` field, checked: the style's default (its encoder's, when it has one) if empty."""
    invert = value or style.cfg.default_invert
    if invert not in C.INVERT_MODES:
        raise ApiError(422, 'bad_spec', f'invert must be one of {", ".join(C.INVERT_MODES)}, got {invert!r}')
    if invert != 'optimize' and not style.cfg.encoder:
        raise ApiError(422, 'bad_spec', f'invert={invert} needs an encoder, and style {style.name!r} has none on this '
                                        f'server (pstyle serve --encoder ENC, or "encoder" in the styles file); '
                                        f'use invert=optimize')
    return invert


def _generate_job(state, data):
    if not isinstance(data, dict):
        raise ApiError(400, 'bad_request', 'expected a JSON object {"seeds": [...], ...}')
    seeds = data.get('seeds')
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ApiError(422, 'bad_spec', 'seeds must be a non-empty list of integers')
    if len(seeds) > state.cfg.max_seeds:
        raise ApiError(422, 'bad_spec', f'at most {state.cfg.max_seeds} seeds per request, got {len(seeds)}')
    if not all(0 <= s < 2**32 for s in seeds):
        raise ApiError(422, 'bad_spec', 'seeds must be in [0, 2^32 - 1]')
    truncation = inputs.as_number(data.get('truncation', 1.0), 'truncation', float)
    if truncation is None:
        truncation = 1.0
    style = state.style(data.get('style'))
    spec = inputs.spec_from_fields(data, style.default_spec)
    return jobs.GenerateJob(style=style, spec=spec, weights=inputs.resolve(style, spec), seeds=seeds,
                            truncation=truncation)


# ----------------------------------------------------------------------------
# Results -> responses.

def png_bytes(array):
    """uint8 [H, W, C] -> PNG bytes, written fresh: no EXIF, GPS or text chunks."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format='PNG')
    return buf.getvalue()


def _wants_json(request):
    return request.query_params.get('format') == 'json' or 'application/json' in request.headers.get('accept', '')


def _b64(array):
    return base64.b64encode(png_bytes(array)).decode('ascii')


def _stylize_response(request, result):
    images = result['images']
    main = images.get('pasted', images['portrait'])
    if not _wants_json(request):
        return Response(png_bytes(main), media_type='image/png')
    return JSONResponse(dict(image=_b64(main), images={k: _b64(v) for k, v in images.items()},
                             manifest=jsonable(result['entry'])))


def _generate_response(request, job, images):
    if _wants_json(request):
        return JSONResponse(dict(images=[dict(seed=s, png=_b64(im)) for s, im in zip(job.seeds, images)],
                                 manifest=dict(style=job.style.name, seeds=job.seeds, truncation=job.truncation,
                                               spec=job.spec.as_dict(), weights=[float(w) for w in job.weights])))
    return Response(png_bytes(images[0] if len(images) == 1 else grid(images)), media_type='image/png')


def grid(images):
    """uint8 [N, H, W, C] -> a near-square grid, white where it runs out."""
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = np.concatenate([images, np.full((rows * cols - n, *images.shape[1:]), 255, np.uint8)])
    return gen.image_grid(tiles, rows, cols)



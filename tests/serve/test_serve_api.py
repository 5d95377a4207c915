"""The HTTP API on tiny networks: answers, formats, health, metrics and every bad input."""

import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pstyle_tests_serve_helpers import decode_png, make_config, photo_bytes, wait_ready
from pstyle.cmd_serve import build_config
from pstyle.models import demo
from pstyle.serve import config as C
from pstyle.serve import jobs
from pstyle.serve.app import create_app

ALIGNED = dict(align='false')


def stylize(client, image=None, query='', headers=None, **fields):
    image = photo_bytes() if image is None else image
    return client.post('/v1/stylize' + query, files=dict(image=('photo.png', image)),
                       data={**ALIGNED, **fields}, headers=headers or {})


def assert_error(response, status, kind, text):
    assert response.status_code == status, response.text
    body = response.json()
    assert body['error'] == kind
    assert text in body['detail']


# ----------------------------------------------------------------------------
# Health and metadata.

def test_healthz_reports_each_network_sha256_and_licence(client_for, nets):
    body = client_for().get('/healthz').json()
    assert body['status'] == 'ok'
    from pstyle.torch_utils.fileio import sha256_file
    assert body['styles']['toon']['base']['sha256'] == sha256_file(nets[0])
    assert body['styles']['toon']['styled']['sha256'] == sha256_file(nets[1])
    assert body['styles']['plain'] == {'base': body['styles']['toon']['base']}
    assert 'unknown' in body['styles']['toon']['base']['licence']


def test_nvidia_networks_are_reported_non_commercial():
    for name in ('ffhq', 'metfaces', 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl'):
        assert 'non-commercial' in C.licence_of(name)
    assert 'non-commercial' not in C.licence_of('/data/my-toon.pt')
    assert all(C.licence_of(name).startswith('MIT, as this project') for name in ('demo', 'demo-toon', 'demo-encoder'))


def test_healthz_is_503_while_models_load(nets, monkeypatch):
    from pstyle.serve import models
    release = threading.Event()
    original = models.ModelStore.load
    monkeypatch.setattr(models.ModelStore, 'load', lambda self: (release.wait(30), original(self))[1])
    with TestClient(create_app(make_config(nets))) as client:
        r = client.get('/healthz')
        assert r.status_code == 503 and r.json()['status'] == 'loading'
        assert_error(client.post('/v1/generate', json=dict(seeds=[1])), 503, 'unavailable', 'still loading')
        release.set()
        wait_ready(client)


def test_missing_lpips_weights_make_healthz_503_with_the_reason_and_generation_still_works(client_for):
    client = client_for(expect=503, lpips_weight=1.0)
    body = client.get('/healthz').json()
    assert body['status'] == 'degraded'
    assert 'vgg16' in body['reason'] and '--lpips-weight 0' in body['reason']
    assert_error(stylize(client), 503, 'unavailable', 'vgg16')
    assert client.post('/v1/generate', json=dict(seeds=[1])).status_code == 200


def test_styles_list_the_w_plus_rows_for_the_sliders(client_for, tiny_network_factory):
    styles = client_for().get('/v1/styles').json()['styles']
    assert [s['name'] for s in styles] == ['toon', 'plain']
    from pstyle.models import wplus
    G = tiny_network_factory(resolution=32)
    assert [r['resolution'] for r in styles[0]['rows']] == wplus.index_resolutions(G).tolist() == [4, 8, 8, 16, 16, 32, 32, 32]


def test_metrics_are_prometheus_text_with_routes_batches_queue_and_errors(client_for):
    client = client_for()
    client.post('/v1/generate', json=dict(seeds=[1]))
    client.post('/v1/generate', json=dict(seeds='x'))
    text = client.get('/metrics').text
    assert 'pstyle_requests_total{route="/v1/generate",status="200"} 1' in text
    assert 'pstyle_requests_total{route="/v1/generate",status="422"} 1' in text
    assert 'pstyle_request_seconds_bucket{route="/v1/generate",le="+Inf"} 2' in text
    assert 'pstyle_batch_images_count 1' in text
    assert 'pstyle_queue_length 0' in text
    assert 'pstyle_errors_total{kind="bad_spec"} 1' in text


# ----------------------------------------------------------------------------
# /v1/generate.

def test_generate_one_seed_is_a_png_of_the_network_resolution(client_for):
    r = client_for().post('/v1/generate', json=dict(seeds=[3]))
    assert r.headers['content-type'] == 'image/png'
    assert decode_png(r.content).shape == (32, 32, 3)


def test_generate_several_seeds_is_a_grid_or_json_with_one_image_per_seed(client_for):
    client = client_for()
    grid = decode_png(client.post('/v1/generate', json=dict(seeds=[1, 2, 3])).content)
    assert grid.shape == (64, 64, 3)
    assert (grid[32:, 32:] == 255).all()  # The fourth cell is blank.
    body = client.post('/v1/generate?format=json', json=dict(seeds=[1, 2, 3])).json()
    images = [decode_png(__import__('base64').b64decode(item['png'])) for item in body['images']]
    assert [item['seed'] for item in body['images']] == [1, 2, 3]
    np.testing.assert_array_equal(images[1], grid[:32, 32:])
    assert body['manifest']['weights'] == [0, 0, 0, 1, 1, 1, 1, 1]


def test_generate_spec_and_style_change_the_image(client_for):
    client = client_for()
    get = lambda **kw: client.post('/v1/generate', json=dict(seeds=[5], **kw)).content
    toon, structure, plain = get(), get(preset='structure'), get(style='plain')
    assert len({toon, structure, plain}) == 3
    assert get(style='plain', preset='structure') == plain  # The base alone ignores the spec.
    assert get(style_strength=0) == plain  # Strength 0: every tensor from A.


@pytest.mark.parametrize('body, text', [
    (dict(seeds=[1], swap_res=33), '--swap-res must be a power of two >= 4, got 33'),
    (dict(seeds=[1], swap_res=64), "--swap-res 64 is above this network's resolution 32"),
    (dict(seeds=[1], weights=[0, 1]), '--weights needs exactly 8 values (one per W+ row of this network), got 2'),
    (dict(seeds=[1], blend_width=0.5), '--blend-width needs --swap-res'),
    (dict(seeds=[1], preset='cubist'), "unknown preset 'cubist'"),
    (dict(seeds=[1], style_strength=2), '--style-strength must be in [0, 1], got 2'),
    (dict(seeds=[1], swap_res='big'), "--swap-res: expected an integer, got 'big'"),
    (dict(seeds=[1], preset='fine', swap_res=16), 'give only one of --weights, --swap-res and --preset'),
    (dict(seeds=[]), 'seeds must be a non-empty list of integers'),
    (dict(seeds=list(range(65))), 'at most 64 seeds per request, got 65'),
    (dict(seeds=[-1]), 'seeds must be in [0, 2^32 - 1]'),
    (dict(seeds=[1], style='oil'), "unknown style 'oil'; choose one of toon, plain"),
])
def test_generate_bad_values_are_422_with_the_cli_message(client_for, body, text):
    assert_error(client_for().post('/v1/generate', json=body), 422, 'bad_spec', text)


def test_generate_body_that_is_not_json_is_400(client_for):
    r = client_for().post('/v1/generate', content=b'seeds=1', headers={'content-type': 'application/json'})
    assert_error(r, 400, 'bad_request', 'not JSON')


# ----------------------------------------------------------------------------
# /v1/stylize.

def test_stylize_answers_a_png_and_json_with_images_and_manifest(client_for):
    client = client_for()
    png = stylize(client)
    assert png.headers['content-type'] == 'image/png'
    body = stylize(client, query='?format=json').json()
    assert set(body['images']) == {'portrait', 'aligned', 'projected'}
    assert __import__('base64').b64decode(body['image']) == png.content  # Same photo, same answer.
    manifest = body['manifest']
    assert manifest['style'] == 'toon' and manifest['invert'] == 'optimize'
    assert manifest['projection']['settings']['num_steps'] == 2
    assert stylize(client, headers={'accept': 'application/json'}).json()['image'] == body['image']


def test_stylize_steps_and_spec_fields_are_applied(client_for):
    client = client_for()
    body = stylize(client, query='?format=json', steps='3', swap_res='8', blend_width='0.5').json()
    assert body['manifest']['projection']['settings']['num_steps'] == 3
    assert body['manifest']['spec']['swap_res'] == 8 and body['manifest']['spec']['blend_width'] == 0.5
    assert 0 < body['manifest']['weights'][2] < 1


def test_stylize_output_carries_no_exif_or_gps(client_for):
    exif = Image.Exif()
    exif[0x010F] = 'PhoneMaker'
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # GPSInfo: latitude
    jpeg = photo_bytes(fmt='JPEG', exif=exif.tobytes())
    assert Image.open(io.BytesIO(jpeg)).getexif()
    out = stylize(client_for(), image=jpeg).content
    img = Image.open(io.BytesIO(out))
    assert not img.getexif() and b'eXIf' not in out and b'PhoneMaker' not in out
    assert set(img.info) <= {'dpi', 'gamma'}


def test_no_face_is_422(client_for):
    r = stylize(client_for(), image=photo_bytes(size=64), align='true')
    assert_error(r, 422, 'no_face', 'no face found')


@pytest.mark.parametrize('image, text', [
    (b'hello, this is text', 'not an image Pillow can read'),
    (photo_bytes(size=64)[:300], 'truncated or corrupt'),
    (b'', 'the "image" field is empty'),
])
def test_bad_images_are_400_naming_the_problem(client_for, image, text):
    assert_error(stylize(client_for(), image=image), 400, 'bad_image', text)


def test_uploads_over_the_size_limit_are_413(client_for):
    client = client_for(max_upload_mb=0.01)
    big = photo_bytes(size=200)  # ~120 KB of noise
    assert_error(stylize(client, image=big), 413, 'too_large', 'limit of 0.01 MiB (--max-upload-mb); got at least 0.1')
    just_over = b'\0' * 11_000  # Over the image limit, inside the allowance for form fields.
    assert_error(stylize(client, image=just_over), 413, 'too_large', 'limit of 0.01 MiB')
    assert stylize(client, image=photo_bytes(size=40)).status_code == 200  # ~5 KB


def test_images_over_the_pixel_limit_are_413_before_decoding(client_for):
    client = client_for(max_pixels=1000)
    assert_error(stylize(client), 413, 'too_large', '32x32 = 1024 pixels, over this server\'s limit of 1000')


@pytest.mark.parametrize('fields, text', [
    (dict(invert='encoder'), "invert=encoder needs an encoder, and style 'toon' has none on this server"),
    (dict(invert='e4e'), "invert must be one of encoder, optimize, encoder+optimize, got 'e4e'"),
    (dict(steps='6'), 'steps must be in [1, 5] on this server, got 6'),
    (dict(steps='0'), 'steps must be in [1, 5] on this server, got 0'),
    (dict(align='maybe'), "align must be true or false, got 'maybe'"),
    (dict(paste_back='true'), 'paste_back needs align=true'),
    (dict(weights='0,0,0,0,0,0,0,2'), '--weights must be in [0, 1]'),
    (dict(style='oil'), "unknown style 'oil'"),
])
def test_stylize_bad_fields_are_422(client_for, fields, text):
    assert_error(stylize(client_for(), **fields), 422, 'bad_spec', text)


def test_a_photo_that_is_not_square_without_alignment_is_422(client_for):
    rng = np.random.RandomState(0)
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (32, 40, 3), dtype=np.uint8)).save(buf, format='PNG')
    assert_error(stylize(client_for(), image=buf.getvalue()), 422, 'bad_input', '40x32 is not square')


def test_a_body_that_is_not_multipart_is_400(client_for):
    r = client_for().post('/v1/stylize', content=b'{}', headers={'content-type': 'application/json'})
    assert_error(r, 400, 'bad_request', 'multipart/form-data')


# ----------------------------------------------------------------------------
# Overload, timeouts, failures.

@pytest.fixture
def blocked_worker(monkeypatch):
    """The worker waits for .set() before each batch."""
    gate = threading.Event()
    original = jobs.run_batch

    def run(store, batch):
        gate.wait(30)
        return original(store, batch)
    monkeypatch.setattr(jobs, 'run_batch', run)
    return gate


def _in_threads(fn, n):
    results = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_a_full_queue_answers_503_with_retry_after(client_for, blocked_worker):
    """With the worker held, one queue slot and six concurrent requests, the server holds at most one running,
    one being dispatched and one queued: the others are refused at once with 503 and Retry-After. (Racing
    exactly two requests against the dispatcher flaked on a loaded machine.)"""
    import time
    client = client_for(queue_size=1, max_batch=1, max_wait_ms=0)
    threads, results = _in_threads(lambda i: client.post('/v1/generate', json=dict(seeds=[i])), 6)
    deadline = time.time() + 20
    while sum(r is not None for r in results) < 3 and time.time() < deadline:
        time.sleep(0.01)  # Refusals answer at once, while the accepted requests wait for the worker.
    blocked_worker.set()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    refused = [r for r in results if r.status_code == 503]
    assert set(statuses) == {200, 503} and len(refused) >= 3, statuses
    assert_error(refused[0], 503, 'queue_full', 'busy')
    assert all(r.headers['retry-after'] == '1' for r in refused)


def test_a_request_past_the_timeout_is_504_and_the_worker_goes_on(client_for, blocked_worker):
    client = client_for(timeout_s=0.3)
    assert_error(client.post('/v1/generate', json=dict(seeds=[1])), 504, 'timeout', 'no result within 0.3 s')
    blocked_worker.set()
    assert client.post('/v1/generate', json=dict(seeds=[1])).status_code == 200


def test_a_failing_request_gets_500_and_does_not_take_the_worker_down(client_for, monkeypatch):
    from pstyle.serve import models
    client = client_for()
    original = models.ModelStore.seeds_to_ws

    def broken(self, G, requests):
        if any(13 in seeds for seeds, _ in requests):
            raise RuntimeError('unlucky seed')
        return original(self, G, requests)
    monkeypatch.setattr(models.ModelStore, 'seeds_to_ws', broken)
    threads, results = _in_threads(lambda i: client.post('/v1/generate', json=dict(seeds=[13 if i == 1 else i])), 3)
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 500, 200]
    assert results[1].json() == dict(error='internal', detail='RuntimeError: unlucky seed')
    assert client.post('/v1/generate', json=dict(seeds=[2])).status_code == 200


# ----------------------------------------------------------------------------
# Access.

def test_an_api_key_is_required_when_set_by_bearer_or_header(client_for):
    client = client_for(api_key='s3cret')
    assert_error(client.post('/v1/generate', json=dict(seeds=[1])), 401, 'unauthorized', 'missing or wrong API key')
    assert_error(client.post('/v1/generate', json=dict(seeds=[1]), headers={'x-api-key': 'nope'}), 401, 'unauthorized', 'wrong')
    assert client.post('/v1/generate', json=dict(seeds=[1]), headers={'authorization': 'Bearer s3cret'}).status_code == 200
    assert client.post('/v1/generate', json=dict(seeds=[1]), headers={'x-api-key': 's3cret'}).status_code == 200
    assert client.get('/metrics').status_code == 401
    assert client.get('/healthz').status_code == 200 and client.get('/').status_code == 200


def test_binding_beyond_loopback_needs_an_api_key(nets):
    with pytest.raises(ValueError, match=r'binding 0.0.0.0 \(not a loopback address\) needs an API key'):
        make_config(nets, host='0.0.0.0').check()
    make_config(nets, host='0.0.0.0', api_key='k').check()
    make_config(nets, host='::1').check()


def test_cors_is_off_by_default_and_on_for_a_given_origin(client_for):
    preflight = dict(origin='https://example.org', **{'access-control-request-method': 'POST'})
    r = client_for().options('/v1/generate', headers=preflight)
    assert 'access-control-allow-origin' not in r.headers
    r = client_for(cors_origins=('https://example.org',)).options('/v1/generate', headers=preflight)
    assert r.headers['access-control-allow-origin'] == 'https://example.org'


# ----------------------------------------------------------------------------
# Configuration.

def test_without_a_network_the_shipped_demo_networks_are_served_with_the_pixel_loss():
    [style] = C.make_styles()
    assert (style.name, style.base, style.styled) == ('demo-toon', 'demo', 'demo-toon')
    cfg = build_config(base=None, styled=None, config=None, mapping='from-a', api_key=None, cors_origin=())
    assert (cfg.lpips_weight, cfg.mse_weight) == (0.0, 1.0)
    chosen = build_config(base=None, styled=None, config=None, mapping='from-a', api_key=None, cors_origin=(),
                          lpips_weight=0.5)
    assert (chosen.lpips_weight, chosen.mse_weight) == (0.5, None)
    with pytest.raises(ValueError, match='--styled needs --base'):
        C.make_styles(styled='demo-toon')


def test_the_default_demo_style_stylizes_a_sample_photo(tmp_path):
    cfg = build_config(base=None, styled=None, config=None, mapping='from-a', api_key=None, cors_origin=(), steps=2,
                       device='cpu')
    with TestClient(create_app(cfg)) as client:
        wait_ready(client)
        photo = demo.sample_photos()[0].read_bytes()
        r = stylize(client, photo)
        assert r.status_code == 200, r.text
        assert decode_png(r.content).shape == (64, 64, 3)


def test_styles_file_lists_named_styles_default_first(tmp_path, nets):
    path = tmp_path / 'styles.json'
    path.write_text('{"styles": {"a": {"base": "%s"}, "b": {"base": "%s", "styled": "%s", "spec": {"preset": "color"}}},'
                    ' "default": "b"}' % (nets[0], nets[0], nets[1]))
    styles = C.load_styles_file(path)
    assert [s.name for s in styles] == ['b', 'a'] and styles[0].default_spec().preset == 'color'
    path.write_text('{"styles": {"a": {"base": "x", "colour": 1}}}')
    with pytest.raises(ValueError, match=r"style 'a' has unknown keys \['colour'\]"):
        C.load_styles_file(path)


def test_uploads_never_touch_the_filesystem(client_for, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError('a temporary file was created for the upload')
    client = client_for(max_upload_mb=8)
    for name in ('SpooledTemporaryFile', 'NamedTemporaryFile', 'TemporaryFile', 'mkstemp'):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr('starlette.formparsers.SpooledTemporaryFile', refuse)  # What UploadFile would spool to.
    big = photo_bytes(size=900)  # ~2.4 MB: over Starlette's 1 MB in-memory spool for form files
    assert len(big) > 2 * 2**20
    assert stylize(client, image=big).status_code == 200

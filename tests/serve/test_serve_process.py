"""A real `pstyle serve` process on a free loopback port: startup, requests, a bounded mixed load, shutdown."""

import concurrent.futures
import signal

import httpx
import pytest
from click.testing import CliRunner

from pstyle.cli import main
from pstyle.models import demo
from pstyle_tests_serve_helpers import decode_png, photo_bytes, running_server

KEY = 'test-key'


@pytest.fixture
def server(nets, tmp_path):
    env = dict(PSTYLE_API_KEY=KEY, TORCH_HOME=str(tmp_path / 'torch_home'))
    args = ['--lpips-weight', '0', '--mse-weight', '1', '--steps', '2', '--max-steps', '4', '--max-batch', '4',
            '--max-upload-mb', '0.05']
    with running_server(nets, tmp_path, args, env) as (url, proc):
        yield url, proc


def test_a_real_server_answers_and_shuts_down_cleanly(server):
    url, proc = server
    auth = {'Authorization': f'Bearer {KEY}'}
    r = httpx.post(url + '/v1/generate', json=dict(seeds=[1, 2]), headers=auth, timeout=60)
    assert r.status_code == 200 and decode_png(r.content).shape == (32, 64, 3)
    r = httpx.post(url + '/v1/stylize', files=dict(image=('p.png', photo_bytes())), data=dict(align='false'),
                   headers=auth, timeout=60)
    assert r.status_code == 200 and decode_png(r.content).shape == (32, 32, 3)
    assert httpx.post(url + '/v1/generate', json=dict(seeds=[1]), timeout=10).status_code == 401
    assert 'pstyle_requests_total{route="/v1/generate",status="200"} 1' in httpx.get(url + '/metrics', headers=auth).text
    proc.terminate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM (0.29+), so the status says "terminated".
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_a_bounded_mixed_load_gets_exactly_the_expected_status_for_every_request(server):
    url, proc = server
    auth = {'X-API-Key': KEY}
    cases = {
        'generate': (200, lambda c: c.post('/v1/generate', json=dict(seeds=[7]), headers=auth)),
        'grid': (200, lambda c: c.post('/v1/generate', json=dict(seeds=[1, 2, 3], preset='color'), headers=auth)),
        'stylize': (200, lambda c: c.post('/v1/stylize', files=dict(image=('p.png', photo_bytes())),
                                          data=dict(align='false', steps='1'), headers=auth)),
        'bad spec': (422, lambda c: c.post('/v1/generate', json=dict(seeds=[1], swap_res=3), headers=auth)),
        'not an image': (400, lambda c: c.post('/v1/stylize', files=dict(image=('p.png', b'GIF89a nonsense')), headers=auth)),
        'too large': (413, lambda c: c.post('/v1/stylize', files=dict(image=('p.png', photo_bytes(size=200))), headers=auth)),
        'too many steps': (422, lambda c: c.post('/v1/stylize', files=dict(image=('p.png', photo_bytes())),
                                                 data=dict(align='false', steps='9'), headers=auth)),
        'no key': (401, lambda c: c.post('/v1/generate', json=dict(seeds=[1]))),
    }
    plan = [name for _ in range(5) for name in cases]  # 40 requests, 8 at a time.
    with httpx.Client(base_url=url, timeout=120) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda name: cases[name][1](client).status_code, plan))
    assert [(n, s) for n, s in zip(plan, statuses)] == [(n, cases[n][0]) for n in plan]
    text = httpx.get(url + '/metrics', headers=auth).text
    assert 'pstyle_requests_total{route="/v1/generate",status="200"} 10' in text
    assert 'pstyle_requests_total{route="/v1/stylize",status="413"} 5' in text
    assert proc.poll() is None


def test_serve_without_a_network_serves_the_shipped_demo_networks_offline(tmp_path):
    with running_server(None, tmp_path, ['--steps', '2'], dict(TORCH_HOME=str(tmp_path / 'torch_home'))) as (url, proc):
        health = httpx.get(url + '/healthz', timeout=10).json()
        assert list(health['styles']) == ['demo-toon'] and set(health['styles']['demo-toon']) == {'base', 'styled', 'encoder'}
        assert health['styles']['demo-toon']['encoder']['sha256'] == demo.DEMO_ENCODERS['demo-encoder'][1]
        photo = demo.sample_photos()[0].read_bytes()
        for invert in ('encoder', 'optimize'):  # The default is the shipped encoder; optimize uses the pixel loss
            r = httpx.post(url + '/v1/stylize', files=dict(image=('p.png', photo)),  # (no LPIPS weights here).
                           data=dict(align='false', invert=invert), timeout=120)
            assert r.status_code == 200, (invert, r.text)
            assert decode_png(r.content).shape == (64, 64, 3)


def test_serve_refuses_a_public_bind_without_a_key(nets, monkeypatch):
    monkeypatch.delenv('PSTYLE_API_KEY', raising=False)
    result = CliRunner().invoke(main, ['serve', '--base', nets[0], '--host', '0.0.0.0'])
    assert result.exit_code == 1 and 'needs an API key: --api-key or $PSTYLE_API_KEY' in result.output

"""`pstyle serve --ray`: the app as a Ray Serve deployment on a local single-node Ray instance, two replicas
on the shipped demo networks, requests through Ray's proxy, then a clean shutdown."""

import asyncio
import concurrent.futures
import signal
import types
from pathlib import Path

import httpx
import pytest
import yaml
from ray import serve

from pstyle.models import demo
from pstyle.serve import config as C
from pstyle.serve import ray_app  # Ray is a dev dependency: without it this fails, never skips.
from pstyle.serve.app import REPLICA_HEADER
from pstyle_tests_serve_helpers import decode_png, running_server


def test_two_ray_replicas_answer_generate_and_stylize_and_shut_down_cleanly(tmp_path):
    args = ['--ray', '--replicas', '2', '--num-cpus', '0.5', '--steps', '2', '--max-batch', '4']
    env = dict(TORCH_HOME=str(tmp_path / 'torch_home'), RAY_USAGE_STATS_ENABLED='0')
    # Ray's start, two replicas each loading the demo networks and encoder: about 40 s on an idle machine,
    # more than 80 s beside another test worker in CI.
    with running_server(None, tmp_path, args, env, timeout=240) as (url, proc):
        photo = demo.sample_photos()[0].read_bytes()

        def call(k):
            with httpx.Client(base_url=url, timeout=60) as c:
                if k % 4 == 3:
                    return c.post('/v1/stylize', files=dict(image=('p.png', photo)), data=dict(align='false'))
                return c.post('/v1/generate', json=dict(seeds=[k]))
        # Ray's proxy learns of the second replica a little after the first answers: rounds of 8 concurrent
        # requests until both have served (at most 10 rounds).
        responses, replicas = [], set()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for round_ in range(10):
                responses += pool.map(call, range(8 * round_, 8 * round_ + 8))
                replicas = {r.headers.get(REPLICA_HEADER) for r in responses}
                if len(replicas) == 2 and round_ >= 2:
                    break
        assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses if r.status_code != 200]
        assert {decode_png(r.content).shape for r in responses} == {(64, 64, 3)}
        assert len(replicas) == 2, replicas  # Both replicas served.
        same = [httpx.post(url + '/v1/generate', json=dict(seeds=[5]), timeout=60).content for _ in range(4)]
        assert same == [responses[5].content] * 4  # Every replica renders seed 5 bit for bit alike.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + '/healthz', timeout=5)


def test_ray_options_map_to_the_deployment_and_autoscaling(nets):
    cfg = C.ServeConfig(styles=C.make_styles(base=nets[0]), max_batch=4, queue_size=32)
    fixed = ray_app.RayOptions(replicas=3, num_cpus=2).deployment_options(cfg)
    assert (fixed['num_replicas'], fixed['ray_actor_options'], fixed['max_ongoing_requests']) == (3, dict(num_cpus=2, num_gpus=0.0), 32)
    scaled = ray_app.RayOptions(replicas=1, max_replicas=4).deployment_options(cfg)
    assert 'num_replicas' not in scaled
    assert scaled['autoscaling_config'] == dict(min_replicas=1, max_replicas=4, target_ongoing_requests=8)
    with pytest.raises(ValueError, match='--max-replicas 1 is below --replicas 2'):
        ray_app.RayOptions(replicas=2, max_replicas=1).check()


def test_the_serve_run_config_file_builds_the_demo_deployment():
    [entry] = yaml.safe_load(Path(ray_app.__file__).with_name('ray_serve.yaml').read_text())['applications']
    assert entry['import_path'] == 'pstyle.serve.ray_app:app_builder'
    cfg, options = ray_app.config_from_args(entry['args'])
    assert [(s.name, s.base, s.styled) for s in cfg.styles] == [('demo-toon', 'demo', 'demo-toon')]
    assert (cfg.max_batch, cfg.steps, cfg.lpips_weight, options.replicas, options.num_cpus) == (8, 100, 0.0, 2, 1)
    with pytest.raises(ValueError, match=r"unknown serve arguments \['colour'\]"):
        ray_app.config_from_args(dict(colour=1))


def test_ray_batches_are_split_by_job_key_and_every_call_gets_its_own_answer(monkeypatch):
    # Outside a replica: @serve.batch only reads max_ongoing_requests from the replica context (for a warning).
    context = types.SimpleNamespace(_deployment_config=types.SimpleNamespace(max_ongoing_requests=64))
    monkeypatch.setattr(serve, 'get_replica_context', lambda: context)
    calls = []

    def run_batch(jobs):
        calls.append([job.name for job in jobs])
        return [ValueError(job.name) if job.name == 'bad' else job.name.upper() for job in jobs]
    cfg = types.SimpleNamespace(max_batch=8, max_wait_ms=50)
    job = lambda name, key: types.SimpleNamespace(name=name, key=key, size=1)  # noqa: E731

    async def main():
        batcher = ray_app.RayBatcher(run_batch, cfg)
        jobs = [job('a', 1), job('b', 2), job('c', 1), job('bad', 2)]
        results = await asyncio.gather(*[batcher.submit(j, 30) for j in jobs], return_exceptions=True)
        await batcher.stop()
        return results
    results = asyncio.run(main())
    assert results[:3] == ['A', 'B', 'C'] and isinstance(results[3], ValueError) and str(results[3]) == 'bad'
    assert calls == [['a', 'c'], ['b', 'bad']]  # One Ray batch, one worker pass per key.


def test_serve_ray_refuses_bad_replica_options_before_starting_ray(nets):
    from click.testing import CliRunner
    from pstyle.cli import main
    result = CliRunner().invoke(main, ['serve', '--base', nets[0], '--ray', '--replicas', '2', '--max-replicas', '1'])
    assert result.exit_code == 1 and '--max-replicas 1 is below --replicas 2' in result.output

"""Serving benchmark: throughput and latency percentiles at 1, 4 and 16 concurrent clients, dynamic batching
against `--max-batch 1`, measured in the same run on localhost.

    python benchmarks/bench_serve.py --network demo                   # the shipped demo networks (64x64)
    python benchmarks/bench_serve.py --network random --res 128       # a paper256-like random generator
    python benchmarks/bench_serve.py --network demo --workloads encoder --requests 64 --out bench_serve.json

Every mode is a real `pstyle serve` process on a free loopback port, all started before the first request
and measured in turns (for each workload and client count, the modes one after the other, their order
alternating), so a change in the machine's load hits every mode alike. Networks: `demo` serves the style
`demo` -> `demo-toon` (the pass renders their blend), `random` a base-only random generator saved to a
temporary folder. Both get an untrained encoder of the base's `pstyle train-encoder` architecture (same cost
as a trained one). Workloads: `generate` (one seed per request) and `encoder` (`/v1/stylize` of the demo
sample photos with `invert=encoder`, `align=false`: one encoder pass, the reconstruction and the portrait).
Modes: `batched` (max batch 8, every pass padded to 8: results bit-identical alone or batched),
`batched-unpadded` (`--no-pad-batch`), `single` (`--max-batch 1`, the baseline), and on Ray Serve
(`--ray`, batched as `batched`) `ray-1` (one replica) and `ray-2` (two, one CPU each): run those with
`--one-at-a-time --baseline ray-1`. Every level is bounded by --requests and --max-seconds; ratios are
throughput against the baseline.
"""

import argparse
import concurrent.futures
import contextlib
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pstyle.models import demo  # noqa: E402
from pstyle.models.checkpoint import load_network, save_network  # noqa: E402
from pstyle.models.deltas import weights_sha256  # noqa: E402
from pstyle.models.networks import Generator  # noqa: E402
from pstyle.projectors.encoder import build_architecture, save_trained_encoder  # noqa: E402
from pstyle.training.train_encoder import encoder_architecture  # noqa: E402

MODES = {
    'batched': ['--max-batch', '8', '--max-wait-ms', '10'],
    'batched-unpadded': ['--max-batch', '8', '--max-wait-ms', '10', '--no-pad-batch'],
    'single': ['--max-batch', '1', '--max-wait-ms', '0'],
    # Ray Serve (extra [ray]), batched as `batched`: one replica, and two with one CPU each.
    'ray-1': ['--ray', '--replicas', '1', '--num-cpus', '1', '--max-batch', '8', '--max-wait-ms', '10'],
    'ray-2': ['--ray', '--replicas', '2', '--num-cpus', '1', '--max-batch', '8', '--max-wait-ms', '10'],
}
WORKLOADS = ('generate', 'encoder')


def network_config(res):
    """NVIDIA's paper256-like channels, scaled to `res`."""
    return dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=8),
                synthesis_kwargs=dict(channel_base=16384, channel_max=512))


def save_random_network(path, config):
    torch.manual_seed(0)
    save_network(path, G_ema=Generator(**config).eval())
    return path


def save_untrained_encoder(path, G):
    """An encoder file of `pstyle train-encoder`'s architecture for G, with random weights."""
    torch.manual_seed(0)
    arch, kwargs, size = encoder_architecture(G)
    config = dict(arch=arch, arch_kwargs=kwargs, num_ws=G.num_ws, w_dim=G.w_dim, input_size=size,
                  input_nc=G.img_channels, generator=dict(weights_sha256=weights_sha256(G)))
    latent_avg = G.mapping.w_avg.detach().float()[None].repeat(G.num_ws, 1)
    return save_trained_encoder(path, build_architecture(arch, kwargs), latent_avg, config)


def prepare_networks(network, res, tmp):
    """(serve options naming the networks and encoder, resolution)."""
    if network == 'demo':
        G = load_network(demo.demo_network_path('demo'))['G_ema']
        nets = ['--base', 'demo', '--styled', 'demo-toon']
    else:
        path = save_random_network(Path(tmp) / 'G.pt', network_config(res))
        G = load_network(path)['G_ema']
        nets = ['--base', str(path)]
    encoder = save_untrained_encoder(Path(tmp) / 'encoder.safetensors', G)
    return nets + ['--encoder', str(encoder)], int(G.img_resolution)


def photos_at(res):
    """PNG bytes of the demo sample photos at `res` x `res`."""
    out = []
    for path in demo.sample_photos():
        buf = io.BytesIO()
        Image.open(path).convert('RGB').resize((res, res)).save(buf, format='PNG')
        out.append(buf.getvalue())
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(networks, args, threads, timeout=300):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, '-m', 'pstyle', 'serve', *networks, '--port', str(port), '--device', 'cpu',
           '--lpips-weight', '0', '--mse-weight', '1', '--queue-size', '256', '--log-level', 'warning', *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f'server exited: {proc.stderr.read().decode()[-2000:]}')
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + '/healthz', timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError('server did not become healthy')
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def request_fn(workload, photos):
    """(client, k) -> response of the k-th request of `workload`."""
    if workload == 'generate':
        return lambda c, k: c.post('/v1/generate', json=dict(seeds=[1000 + k]))
    return lambda c, k: c.post('/v1/stylize', files=dict(image=('p.png', photos[k % len(photos)])),
                               data=dict(align='false', invert='encoder'))


def run_level(url, send, clients, requests, max_seconds, warmup=2):
    """`requests` calls of `send` from `clients` threads; latency percentiles and throughput."""
    with httpx.Client(base_url=url, timeout=300) as c:
        for k in range(warmup):
            send(c, k).raise_for_status()
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies, statuses = [], []
    stop_at = time.perf_counter() + max_seconds

    def client():
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.perf_counter() < stop_at:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                t0 = time.perf_counter()
                r = send(c, k)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(r.status_code)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return dict(clients=clients, requests=len(latencies), ok=statuses.count(200), wall_s=wall,
                throughput_rps=statuses.count(200) / wall, p50_ms=float(np.percentile(ms, 50)),
                p95_ms=float(np.percentile(ms, 95)), p99_ms=float(np.percentile(ms, 99)),
                load_before=load_before, load_after=os.getloadavg()[0])


def run(network='random', res=128, levels=(1, 4, 16), requests=32, max_seconds=60, modes=('batched', 'single'),
        workloads=WORKLOADS, threads=None, one_at_a_time=False, baseline='single', log=print):
    """Rows of measurements; `one_at_a_time`: one server up at a time, each measured in full (Ray modes: two
    Ray instances at once would compete), instead of all up and measured in alternating turns."""
    threads = threads or os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        networks, res = prepare_networks(network, res, tmp)
        photos = photos_at(res)
        groups = [[mode] for mode in modes] if one_at_a_time else [list(modes)]
        for group in groups:
            with contextlib.ExitStack() as stack:
                urls = {mode: stack.enter_context(server(networks, MODES[mode], threads)) for mode in group}
                rows += _measure(urls, group, workloads, levels, requests, max_seconds, photos,
                                 dict(network=network, res=res), log)
    base = {(r['workload'], r['clients']): r['throughput_rps'] for r in rows if r['mode'] == baseline}
    for row in rows:
        single = base.get((row['workload'], row['clients']))
        row['throughput_vs_single'] = row['throughput_rps'] / single if single else None
    return rows


def _measure(urls, modes, workloads, levels, requests, max_seconds, photos, tags, log):
    rows, turn = [], itertools.count()
    for workload in workloads:
        send = request_fn(workload, photos)
        for clients in levels:
            order = list(modes) if next(turn) % 2 == 0 else list(reversed(modes))  # Alternate who goes first.
            for mode in order:
                row = dict(workload=workload, mode=mode, **tags,
                           **run_level(urls[mode], send, clients, requests, max_seconds))
                rows.append(row)
                log(f'{workload:>8} {mode:>17} c={clients:<3} {row["throughput_rps"]:7.2f} req/s  '
                    f'p50 {row["p50_ms"]:8.1f}  p95 {row["p95_ms"]:8.1f}  p99 {row["p99_ms"]:8.1f} ms  '
                    f'({row["ok"]}/{row["requests"]} ok, load {row["load_before"]:.1f}->{row["load_after"]:.1f})')
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--network', choices=['random', 'demo'], default='random')
    parser.add_argument('--res', type=int, default=128, help='Resolution of the random network.')
    parser.add_argument('--workloads', default=','.join(WORKLOADS))
    parser.add_argument('--levels', default='1,4,16', help='Concurrent clients, comma-separated.')
    parser.add_argument('--requests', type=int, default=32, help='Requests per level.')
    parser.add_argument('--max-seconds', type=float, default=60, help='Time bound per level.')
    parser.add_argument('--modes', default='batched,single', help=f'Comma-separated, of {", ".join(MODES)}.')
    parser.add_argument('--threads', type=int, default=None, help='Server torch threads (default: every core).')
    parser.add_argument('--one-at-a-time', action='store_true', help='One server up at a time (use for ray-1,ray-2).')
    parser.add_argument('--baseline', default='single', help='The mode the ratios divide by.')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    rows = run(args.network, args.res, [int(v) for v in args.levels.split(',')], args.requests, args.max_seconds,
               args.modes.split(','), args.workloads.split(','), args.threads, args.one_at_a_time, args.baseline)
    print(f'\n| workload | mode | clients | req/s | x {args.baseline} | p50 ms | p95 ms | p99 ms | answered | load |\n'
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        ratio = f'{r["throughput_vs_single"]:.2f}' if r['throughput_vs_single'] else '-'
        print(f'| {r["workload"]} | {r["mode"]} | {r["clients"]} | {r["throughput_rps"]:.2f} | {ratio} | '
              f'{r["p50_ms"]:.0f} | {r["p95_ms"]:.0f} | {r["p99_ms"]:.0f} | {r["ok"]}/{r["requests"]} | '
              f'{r["load_before"]:.1f} |')
    if args.out:
        args.out.write_text(json.dumps(dict(cpu_count=os.cpu_count(), rows=rows), indent=1))
    return rows


if __name__ == '__main__':
    main()

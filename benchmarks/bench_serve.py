"""Serving benchmark: /v1/generate throughput and latency percentiles at 1, 4 and 16 concurrent clients,
dynamic batching against `--max-batch 1`, measured in the same run on localhost.

    python benchmarks/bench_serve.py                                  # 128x128 random generator
    python benchmarks/bench_serve.py --res 256 --requests 48 --out bench_serve.json

Each mode is a real `pstyle serve` process on a free loopback port, serving a random generator saved to a
temporary folder (a base-only style: the pass is the generator, no blending). Modes: `batched` (max batch
8, every pass padded to 8 images: results bit-identical alone or batched), `batched-unpadded`
(`--no-pad-batch`: a pass renders only the images it has) and `single` (`--max-batch 1`, the baseline).
Every level is bounded by --requests and --max-seconds; ratios are throughput against `single`.
"""

import argparse
import concurrent.futures
import contextlib
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pstyle.models.checkpoint import save_network  # noqa: E402
from pstyle.models.networks import Generator  # noqa: E402

MODES = {
    'batched': ['--max-batch', '8', '--max-wait-ms', '10'],
    'batched-unpadded': ['--max-batch', '8', '--max-wait-ms', '10', '--no-pad-batch'],
    'single': ['--max-batch', '1', '--max-wait-ms', '0'],
}


def network_config(res):
    """NVIDIA's paper256-like channels, scaled to `res`."""
    return dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=8),
                synthesis_kwargs=dict(channel_base=16384, channel_max=512))


def save_random_network(path, config):
    torch.manual_seed(0)
    save_network(path, G_ema=Generator(**config).eval())
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(network, args, threads, timeout=300):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, '-m', 'pstyle', 'serve', '--base', str(network), '--port', str(port), '--device', 'cpu',
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


def run_level(url, clients, requests, max_seconds, warmup=2):
    """`requests` /v1/generate calls (one seed each) from `clients` threads; latency percentiles and throughput."""
    with httpx.Client(base_url=url, timeout=120) as c:
        for seed in range(warmup):
            c.post('/v1/generate', json=dict(seeds=[seed])).raise_for_status()
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies, statuses = [], []
    stop_at = time.perf_counter() + max_seconds

    def client():
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.perf_counter() < stop_at:
                with lock:
                    seed = next(counter, None)
                if seed is None:
                    return
                t0 = time.perf_counter()
                r = c.post('/v1/generate', json=dict(seeds=[1000 + seed]))
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(r.status_code)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return dict(clients=clients, requests=len(latencies), ok=statuses.count(200), wall_s=wall,
                throughput_rps=statuses.count(200) / wall, p50_ms=float(np.percentile(ms, 50)),
                p95_ms=float(np.percentile(ms, 95)), p99_ms=float(np.percentile(ms, 99)))


def run(res=128, levels=(1, 4, 16), requests=32, max_seconds=60, modes=tuple(MODES), threads=None, log=print):
    threads = threads or os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        network = save_random_network(Path(tmp) / 'G.pt', network_config(res))
        for mode in modes:
            with server(network, MODES[mode], threads) as url:
                for clients in levels:
                    row = dict(mode=mode, res=res, **run_level(url, clients, requests, max_seconds))
                    rows.append(row)
                    log(f'{mode:>17} c={clients:<3} {row["throughput_rps"]:7.2f} req/s  p50 {row["p50_ms"]:8.1f}  '
                        f'p95 {row["p95_ms"]:8.1f}  p99 {row["p99_ms"]:8.1f} ms  ({row["ok"]}/{row["requests"]} ok)')
    base = {r['clients']: r['throughput_rps'] for r in rows if r['mode'] == 'single'}
    for row in rows:
        row['throughput_vs_single'] = row['throughput_rps'] / base[row['clients']] if row['clients'] in base else None
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--res', type=int, default=128)
    parser.add_argument('--levels', default='1,4,16', help='Concurrent clients, comma-separated.')
    parser.add_argument('--requests', type=int, default=32, help='Requests per level.')
    parser.add_argument('--max-seconds', type=float, default=60, help='Time bound per level.')
    parser.add_argument('--modes', default=','.join(MODES))
    parser.add_argument('--threads', type=int, default=None, help='Server torch threads (default: every core).')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    rows = run(args.res, [int(v) for v in args.levels.split(',')], args.requests, args.max_seconds,
               args.modes.split(','), args.threads)
    print('\n| mode | clients | req/s | x single | p50 ms | p95 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        ratio = f'{r["throughput_vs_single"]:.2f}' if r['throughput_vs_single'] else '-'
        print(f'| {r["mode"]} | {r["clients"]} | {r["throughput_rps"]:.2f} | {ratio} | {r["p50_ms"]:.0f} | '
              f'{r["p95_ms"]:.0f} | {r["p99_ms"]:.0f} |')
    if args.out:
        args.out.write_text(json.dumps(dict(cpu_count=os.cpu_count(), rows=rows), indent=1))
    return rows


if __name__ == '__main__':
    main()

"""`pstyle bench generator`: images/s per execution path against NVIDIA's order, in one run."""

import json

import click

from pstyle.models.bench import bench_generator


@click.group()
def bench():
    """Benchmarks that print ratios against a baseline measured in the same run."""


@bench.command()
@click.option('--res', 'resolutions', type=click.Choice(['256', '1024']), multiple=True, default=['256'], show_default=True, help='Generator resolution (official configs); repeatable.')
@click.option('--batch', 'batch_sizes', type=click.IntRange(min=1), multiple=True, default=[1, 4, 16], show_default=True, help='Batch sizes; repeatable.')
@click.option('--device', default=None, help='cpu or cuda (default: cuda when available).')
@click.option('--repeat', type=click.IntRange(min=1), default=3, show_default=True, help='Timed repetitions per measurement.')
@click.option('--no-backward', is_flag=True, help='Forward only.')
@click.option('--include-slow', is_flag=True, help='Also time bf16 on CPUs without AMX/AVX-512 BF16.')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Also write the rows as JSON.')
def generator(resolutions, batch_sizes, device, repeat, no_backward, include_slow, json_path):
    """Generator forward / forward+backward images/s: baseline (NVIDIA's order), ours fp32, ours bf16/fp16."""
    rows = []
    for res in resolutions:
        rows += bench_generator(int(res), batch_sizes, device, repeat, backward=not no_backward, log=click.echo,
                                include_slow=include_slow)
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(rows, f, indent=1)

"""The shipped demo networks and sample photos: short names, integrity, size budget, fp16 storage."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pstyle.cli import main
from pstyle.models import checkpoint, demo
from pstyle.models.formats import CheckpointError
from pstyle.torch_utils.fileio import sha256_file


def test_demo_short_names_resolve_offline_to_the_shipped_files_and_load():
    for name, (filename, _) in demo.DEMO_NETWORKS.items():
        assert checkpoint.resolve_network(name) == demo.DEMO_DIR / filename
        nets = checkpoint.load_network(name)
        G = nets['G_ema']
        assert (G.img_resolution, G.num_ws) == (64, 10)
        assert 'D' in nets  # Few-shot styles (D features) and fine-tunes start from the shipped files.
        assert all(torch.isfinite(p).all() for p in G.parameters())


def test_the_shipped_files_match_their_recorded_sha256_and_fit_the_size_budget():
    total = 0
    for name, (filename, sha256) in demo.DEMO_NETWORKS.items():
        path = demo.DEMO_DIR / filename
        assert sha256 is not None and sha256_file(path) == sha256, name
        total += path.stat().st_size
    total += sum(p.stat().st_size for p in demo.sample_photos())
    assert total <= 10 * 2**20


def test_a_damaged_demo_file_is_refused_with_its_path(tmp_path, monkeypatch):
    damaged = tmp_path / 'demo.safetensors'
    damaged.write_bytes((demo.DEMO_DIR / 'demo.safetensors').read_bytes()[:-1] + b'\0')
    monkeypatch.setattr(demo, 'DEMO_DIR', tmp_path)
    with pytest.raises(CheckpointError, match=r"demo.safetensors \(demo network 'demo'\) does not match its recorded sha256"):
        checkpoint.resolve_network('demo')
    damaged.unlink()
    with pytest.raises(CheckpointError, match=r"the demo network 'demo' should ship at .*demo.safetensors, which is missing"):
        checkpoint.resolve_network('demo')


def test_sample_photos_are_aligned_64px_squares():
    photos = demo.sample_photos()
    assert len(photos) >= 4
    for path in photos:
        assert np.array(Image.open(path)).shape == (64, 64, 3)


def test_unknown_short_names_list_the_demo_networks_too():
    with pytest.raises(CheckpointError, match='short names demo, demo-toon, ffhq'):
        checkpoint.resolve_network('no-such-network')


def test_convert_fp16_skip_g_halves_the_file_and_loads_back_within_fp16_rounding(tmp_path, tiny_network_factory):
    G = tiny_network_factory()
    src = tmp_path / 'full.pt'
    checkpoint.save_network(src, G=G, G_ema=tiny_network_factory(seed=3))
    result = CliRunner().invoke(main, ['convert', str(src), str(tmp_path / 'small.safetensors'), '--skip-g', '--fp16'])
    assert result.exit_code == 0, result.output
    assert 'G_ema' in result.output and ' G,' not in result.output
    small = checkpoint.load_network(tmp_path / 'small.safetensors')
    assert 'G' not in small
    full = checkpoint.load_network(src)['G_ema']
    for (name, a), b in zip(full.state_dict().items(), small['G_ema'].state_dict().values()):
        assert b.dtype == a.dtype  # Loaded back into float32 networks.
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    checkpoint.save_network(tmp_path / 'fp32.safetensors', G_ema=full)
    assert (tmp_path / 'small.safetensors').stat().st_size < 0.6 * (tmp_path / 'fp32.safetensors').stat().st_size
    refused = CliRunner().invoke(main, ['convert', str(src), str(tmp_path / 'x.pkl'), '--format', 'nvidia', '--fp16'])
    assert refused.exit_code != 0 and '--fp16 is for the native format only' in refused.output


def test_info_describes_the_demo_network():
    result = CliRunner().invoke(main, ['info', 'demo', '--json'])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)['networks']['G_ema']['img_resolution'] == 64

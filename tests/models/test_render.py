"""Generation: NVIDIA seed semantics, batch independence, saved latents, style mixing."""

import numpy as np
import pytest
import torch

from pstyle.models import render as gen
from pstyle.models import latents
from pstyle.models import render as rendering
from pstyle.models.networks import Generator


@pytest.fixture(scope='module')
def G(tiny_network_factory):
    return tiny_network_factory(seed=1)


def test_parse_range():
    assert gen.parse_range('0-3,7, 10-11') == [0, 1, 2, 3, 7, 10, 11]
    assert gen.parse_range([3, 4]) == [3, 4]
    with pytest.raises(ValueError, match='runs backwards'):
        gen.parse_range('5-2')
    with pytest.raises(ValueError, match='cannot parse "x"'):
        gen.parse_range('1,x')


def test_seed_latents_follow_nvidia_randomstate(G):
    ws = gen.seeds_to_ws(G, [7, 3])
    z7 = torch.from_numpy(np.random.RandomState(7).randn(1, 16)).float()
    assert torch.allclose(ws[0], G.mapping(z7, torch.zeros(1, 0))[0])


def test_images_identical_at_any_batch_size(G):
    a = dict(gen.generate_images(G, range(5), batch_size=5))
    b = dict(gen.generate_images(G, range(5), batch_size=2))
    assert a.keys() == b.keys()
    for seed in a:
        assert a[seed].dtype == np.uint8 and a[seed].shape == (16, 16, 3)
        assert np.abs(a[seed].astype(int) - b[seed].astype(int)).max() <= 1  # uint8 rounding only


def test_precision_checks(G):
    with pytest.raises(ValueError, match='fp16 needs a CUDA device'):
        gen.compute_dtype('fp16', torch.device('cpu'))
    with pytest.raises(ValueError, match='precision must be one of'):
        gen.compute_dtype('int8', torch.device('cpu'))
    fp32 = gen.synthesize(G, gen.seeds_to_ws(G, [0, 1]))
    bf16 = gen.synthesize(G, gen.seeds_to_ws(G, [0, 1]), precision='bf16')
    assert (fp32 - bf16).abs().mean() < 0.05


def test_class_label_errors(G):
    with pytest.raises(ValueError, match='unconditional'):
        gen.class_labels(G, 1, 2, 'cpu')
    Gc = Generator(z_dim=8, w_dim=8, c_dim=3, img_resolution=8, img_channels=3, synthesis_kwargs=dict(channel_base=64, channel_max=8))
    with pytest.raises(ValueError, match='conditional'):
        gen.class_labels(Gc, None, 2, 'cpu')
    with pytest.raises(ValueError, match=r'\[0, 2\]'):
        gen.class_labels(Gc, 3, 2, 'cpu')


def test_projected_w_roundtrip_and_errors(G, tmp_path):
    ws = gen.seeds_to_ws(G, [4, 5]).numpy()
    np.savez(tmp_path / 'nv.npz', w=ws)  # NVIDIA projector layout
    loaded, names = latents.load_projected_ws(tmp_path / 'nv.npz', G)
    assert torch.equal(loaded, torch.from_numpy(ws)) and names == ['proj00', 'proj01']
    np.savez(tmp_path / 'w.npz', ws=ws[:, 0], names=np.array(['a', 'b']))  # W (one row) broadcast to W+
    loaded, names = latents.load_projected_ws(tmp_path / 'w.npz', G)
    assert loaded.shape == (2, G.num_ws, 16) and names == ['a', 'b']
    np.savez(tmp_path / 'bad.npz', w=ws[:, :3])
    with pytest.raises(ValueError, match=r'needs \[N, 6, 16\]'):
        latents.load_projected_ws(tmp_path / 'bad.npz', G)
    (tmp_path / 'junk.npz').write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='not a readable'):
        latents.load_projected_ws(tmp_path / 'junk.npz', G)
    np.savez(tmp_path / 'other.npz', x=ws)
    with pytest.raises(ValueError, match='no "ws" or "w"'):
        latents.load_projected_ws(tmp_path / 'other.npz', G)


def test_style_mix_grid(G):
    rows, cols, mixed = gen.style_mix_ws(G, [1, 2], [3, 4, 5], [0, 1])
    assert mixed.shape == (2, 3, G.num_ws, 16)
    assert torch.equal(mixed[1, 2, :2], cols[2, :2]) and torch.equal(mixed[1, 2, 2:], rows[1, 2:])
    grid = gen.style_mix_grid(G, [1, 2], [3, 4, 5], [0, 1])
    assert grid.shape == (3 * 16, 4 * 16, 3)
    assert (grid[:16, :16] == 255).all()
    with pytest.raises(ValueError, match='out of range'):
        gen.style_mix_ws(G, [1], [2], [G.num_ws])


def test_render_projected_uses_saved_noise_maps(G, tmp_path):
    ws = gen.seeds_to_ws(G, [4, 5])
    layers = latents.noise_layers(G)
    torch.manual_seed(0)
    noise = {name: torch.randn(2, 1, layer.resolution, layer.resolution) for name, layer in layers.items()}
    for layer in layers.values():
        layer.noise_strength.data.fill_(0.5)
    try:
        arrays = {f'noise/{name}': n[:, 0].numpy() for name, n in noise.items()}
        np.savez(tmp_path / 'proj.npz', ws=ws.numpy(), names=np.array(['a', 'b']), **arrays)
        names, images = gen.render_projected(G, tmp_path / 'proj.npz')
        expected = gen.to_uint8(rendering.render(G, ws, noise).detach())
        plain = gen.to_uint8(gen.synthesize(G, ws))
        assert names == ['a', 'b'] and np.array_equal(images, expected)
        assert not np.array_equal(images, plain)  # the saved maps really changed the pixels
        names, images = gen.render_projected(G, tmp_path / 'proj.npz', noise_mode='none')
        assert np.array_equal(images, gen.to_uint8(gen.synthesize(G, ws, noise_mode='none')))
    finally:
        for layer in layers.values():
            layer.noise_strength.data.zero_()


def test_latents_saved_by_e4e_and_psp_scripts(G, tmp_path):
    """e4e/pSp's inference scripts torch.save {image name: W+ [num_ws, w_dim]}; a bare tensor loads too."""
    ws = gen.seeds_to_ws(G, [1, 2])
    torch.save({'a.jpg': ws[0], 'b.jpg': ws[1:2]}, tmp_path / 'latents.pt')
    loaded, names = latents.load_projected_ws(tmp_path / 'latents.pt', G)
    assert names == ['a', 'b'] and torch.equal(loaded, ws)  # stems of the stored names
    torch.save(ws[:, 0], tmp_path / 'w.pt')                           # [N, w_dim]: W, broadcast to W+
    loaded, names = latents.load_projected_ws(tmp_path / 'w.pt', G)
    assert names == ['proj00', 'proj01'] and torch.equal(loaded, ws[:, :1].expand(-1, G.num_ws, -1))
    torch.save({'a.jpg': ws[0, 0]}, tmp_path / 'one_w.pt')             # a dict of W vectors
    assert latents.load_projected_ws(tmp_path / 'one_w.pt', G)[0].shape == (1, G.num_ws, G.w_dim)
    torch.save({'a': [1, 2]}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match="expected a tensor, a dict of tensors .* or rosinality's projector output"):
        latents.load_projected_ws(tmp_path / 'bad.pt', G)
    (tmp_path / 'junk.pt').write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='not a readable torch latent file'):
        latents.load_projected_ws(tmp_path / 'junk.pt', G)


def test_style_mix_rows_resolve_through_the_wplus_table(G):
    rows, cols, by_index = gen.style_mix_ws(G, [1], [2], [0, 1, 2])
    _, _, by_spec = gen.style_mix_ws(G, [1], [2], 'res:4-8')
    assert torch.equal(by_index, by_spec)
    with pytest.raises(ValueError, match='cannot parse "b8.conv7"'):
        gen.style_mix_ws(G, [1], [2], 'b8.conv7')

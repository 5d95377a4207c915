"""Perceptual path length: NVIDIA's definition, per-sample seeding, filtering, crop, real Generator."""

import numpy as np
import pytest
import torch

from pstyle.metrics.inputs import InputError
from pstyle.metrics.lpips_utils import load_lpips
from pstyle.metrics.ppl import _face_crop_and_downsample, compute_ppl, filtered_mean, slerp


@pytest.fixture(scope='module')
def lp():
    return load_lpips('vgg', 'cpu', allow_random_backbone=True)


class _LinearG(torch.nn.Module):
    """Minimal Generator API without noise: ws -> image by a fixed linear map (PPL is then exact to check)."""
    z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels = 8, 0, 8, 2, 32, 3

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer('A', torch.randn(8, 3 * 32 * 32, generator=g) * 0.1)

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return torch.tanh(z).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode='const', force_fp32=False):
        return torch.tanh(ws[:, 0] @ self.A).view(-1, 3, 32, 32)


def test_distances_follow_nvidias_definition(lp):
    G = _LinearG()
    eps, seed = 1e-2, 5
    _, dist = compute_ppl(G, lp, num_samples=3, epsilon=eps, crop=False, batch_size=2, seed=seed)
    rs = np.random.RandomState([seed, 1])                  # sample 1
    z0, z1 = (torch.from_numpy(rs.randn(1, 8)).float() for _ in range(2))
    w0, w1 = G.mapping(z0, None), G.mapping(z1, None)
    img0, img1 = G.synthesis(w0), G.synthesis(w0.lerp(w1, eps))   # sampling 'end': t = 0
    with torch.no_grad():
        expected = lp(img0, img1).item() / eps ** 2
    assert dist[1] == pytest.approx(expected, rel=1e-4)
    assert (dist > 0).all()


def test_per_sample_seeding_is_batch_size_independent(lp):
    G = _LinearG()
    a = compute_ppl(G, lp, num_samples=3, epsilon=1e-2, crop=False, batch_size=2, seed=1, sampling="full")[1]
    b = compute_ppl(G, lp, num_samples=3, epsilon=1e-2, crop=False, batch_size=3, seed=1, sampling="full")[1]
    np.testing.assert_allclose(a, b, rtol=1e-4)
    c = compute_ppl(G, lp, num_samples=3, epsilon=1e-2, crop=False, batch_size=3, seed=2, sampling="full")[1]
    assert not np.allclose(a, c)


def test_z_space_uses_slerp(lp):
    G = _LinearG()
    ppl_w, _ = compute_ppl(G, lp, num_samples=4, epsilon=1e-2, crop=False, space='w', seed=3)
    ppl_z, _ = compute_ppl(G, lp, num_samples=4, epsilon=1e-2, crop=False, space='z', seed=3)
    assert np.isfinite(ppl_z) and ppl_z != ppl_w
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert torch.allclose(slerp(a, b, torch.tensor([[0.5]])), torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5]]))


def test_filtered_mean_drops_outer_percentiles():
    d = np.arange(1000, dtype=np.float64)
    d[0], d[-1] = -1e9, 1e9
    lo, hi = np.percentile(d, 1, method='lower'), np.percentile(d, 99, method='higher')
    assert filtered_mean(d) == pytest.approx(d[(d >= lo) & (d <= hi)].mean())
    assert abs(filtered_mean(d)) < 1000


def test_face_crop_and_downsample():
    img = torch.arange(1024.0).repeat(1, 3, 1024, 1)
    out = _face_crop_and_downsample(img, crop=True)         # 1024 -> crop 512x512 -> box 2x -> 256
    assert out.shape == (1, 3, 256, 256)
    assert out[0, 0, 0, 0].item() == pytest.approx((256 + 257) / 2)     # columns start at 2/8 of the width
    assert _face_crop_and_downsample(torch.zeros(1, 3, 64, 64), crop=True).shape == (1, 3, 32, 32)
    assert _face_crop_and_downsample(torch.zeros(1, 3, 512, 512), crop=False).shape == (1, 3, 256, 256)


def test_bad_arguments(lp):
    with pytest.raises(ValueError, match="space must be w or z and sampling end or full; got 'x', 'end'"):
        compute_ppl(_LinearG(), lp, 2, space='x')
    with pytest.raises(ValueError, match='PPL needs at least 1 sample; got 0'):
        compute_ppl(_LinearG(), lp, 0)


def test_ppl_on_real_generator_randomizes_noise_like_nvidia(lp, tiny_network_factory):
    G = tiny_network_factory(seed=0, resolution=32)
    before = {k: v.clone() for k, v in G.named_buffers() if k.endswith('noise_const')}
    assert before, 'the Generator has no noise_const buffers'
    p1, d1 = compute_ppl(G, lp, num_samples=4, batch_size=2, crop=True, seed=0)
    p2, d2 = compute_ppl(G, lp, num_samples=4, batch_size=2, crop=True, seed=0)
    assert np.isfinite(p1) and p1 > 0 and d1.shape == (4,)
    np.testing.assert_array_equal(d1, d2)                   # deterministic given the seed
    assert all(torch.equal(v, dict(G.named_buffers())[k]) for k, v in before.items())   # caller's G untouched


def test_a_generator_producing_nan_is_an_error_not_a_ppl(lp, tiny_network_factory):
    G = tiny_network_factory()
    G.synthesis.b16.torgb.bias.data[1] = float('nan')
    with pytest.raises(InputError, match=r'the generator produced non-finite values \(NaN or Inf\) for PPL samples 0..1'):
        compute_ppl(G, lp, num_samples=2, crop=False, batch_size=2)

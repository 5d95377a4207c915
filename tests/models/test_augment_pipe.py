"""Tests for training/augment.py: NVIDIA compatibility, identity at p=0, each augmentation, statistics."""

import collections
import io
import math
import pickle

import numpy as np
import pytest
import torch

from pstyle.models.augment import AugmentPipe, augpipe_specs

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.cuda)]
SINGLE = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast',
          'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout']


def _smooth(n, c, size, seed=0, dtype=torch.float32):
    """Band-limited test images (bicubic upsampling of 6x6 noise), roughly in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([n, c, 6, 6], generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(x, size=size, mode='bicubic', align_corners=False).to(dtype)


def _load_nvidia_augment_pipe(path):
    """The augment_pipe of a NVIDIA snapshot, without executing anything it stores."""
    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            safe = {
                ('torch_utils.persistence', '_reconstruct_persistent_obj'): lambda meta: meta,
                ('torch.storage', '_load_from_bytes'): lambda b: torch.load(io.BytesIO(b), weights_only=True),
                ('collections', 'OrderedDict'): collections.OrderedDict,
                ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
                ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
                ('numpy', 'dtype'): np.dtype,
            }
            if name == 'scalar' and module.startswith('numpy'):
                return lambda dt, b: np.frombuffer(b, dt)[0]
            return safe[(module, name)]
    with open(path, 'rb') as f:
        return Unpickler(f).load()['augment_pipe']


def test_rebuilds_nvidia_augment_pipe(fixtures):
    meta = _load_nvidia_augment_pipe(fixtures / 'nvlabs_uncond32.pkl')
    state = meta['state']
    assert meta['class_name'] == 'AugmentPipe'
    pipe = AugmentPipe(**state['_init_kwargs'])
    assert list(pipe.state_dict()) == list(state['_buffers'])  # p, Hz_geom, Hz_fbank
    for name, ref in state['_buffers'].items():  # sym6 and the sym2 filter bank, to float32 rounding
        assert pipe.state_dict()[name].shape == ref.shape
        torch.testing.assert_close(pipe.state_dict()[name], ref, atol=1e-7, rtol=1e-6)
    for name in pipe.init_kwargs:  # every attribute NVIDIA stores, with the same value
        assert getattr(pipe, name) == state[name], name
    pipe.load_state_dict(state['_buffers'])
    assert state['_init_kwargs'] == augpipe_specs['bgc']


def test_presets():
    blit, geom = dict(xflip=1, rotate90=1, xint=1), dict(scale=1, rotate=1, aniso=1, xfrac=1)
    color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert augpipe_specs['bg'] == {**blit, **geom}
    assert augpipe_specs['bgcfnc'] == {**blit, **geom, **color, 'imgfilter': 1, 'noise': 1, 'cutout': 1}
    assert set(augpipe_specs) == {'blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc'}
    for spec in augpipe_specs.values():
        AugmentPipe(**spec)


def test_filter_bank_sums_to_identity():
    fbank = AugmentPipe().Hz_fbank.double()
    delta = torch.zeros(fbank.shape[1], dtype=torch.float64)
    delta[fbank.shape[1] // 2] = 1
    torch.testing.assert_close(fbank.sum(0), delta, atol=1e-6, rtol=0)
    assert torch.allclose(fbank, fbank.flip(1), atol=1e-7)  # zero-phase bands


@pytest.mark.parametrize('device', DEVICES)
def test_identity_at_p0_exact(device):
    pipe = AugmentPipe(**augpipe_specs['bgcfnc']).to(device)
    pipe.p.zero_()
    x = _smooth(4, 3, 32).to(device)
    torch.manual_seed(0)
    assert torch.equal(pipe(x), x)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('name', SINGLE)
def test_each_augmentation_changes_images(name, device):
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        x = _smooth(8, 3, 32, dtype=dtype).to(device)
        y = AugmentPipe(**{name: 1}).to(device)(x)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert (y - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).any(), f'{name} left every image unchanged'


def test_blits_are_exact_pixel_copies():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(AugmentPipe(xflip=1)(x, debug_percentile=0.99), x.flip(3))
    assert torch.equal(AugmentPipe(xflip=1)(x, debug_percentile=1), x.flip(3))
    assert torch.equal(AugmentPipe(xflip=1)(x, debug_percentile=0.2), x)
    assert torch.equal(AugmentPipe(rotate90=1)(x, debug_percentile=0.3), torch.rot90(x, -1, [2, 3]))
    assert torch.equal(AugmentPipe(rotate90=1)(x, debug_percentile=0.6), torch.rot90(x, 2, [2, 3]))
    y = AugmentPipe(xint=1)(x, debug_percentile=0.75)  # (2 * 0.75 - 1) * 0.125 * 16 = 1 pixel right and down
    assert torch.equal(y[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert torch.equal(y[:, :, 0, 1:], x[:, :, 1, :-1])  # the exposed row is reflected


def test_random_xflip_is_flip_or_identity():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    y = AugmentPipe(xflip=1)(x)
    flipped = [torch.equal(y[i], x[i].flip(2)) for i in range(16)]
    assert all(f or torch.equal(y[i], x[i]) for i, f in enumerate(flipped))
    assert 0 < sum(flipped) < 16


def test_general_geometry_about_the_center():
    x = _smooth(1, 1, 48)
    # Two 90-degree rotations (pre and post, theta = (2q - 1) * pi) make 180 degrees.
    y = AugmentPipe(rotate=1)(x, debug_percentile=0.75)
    assert (y - x.flip(2).flip(3))[..., 6:-6, 6:-6].abs().max() < 0.02
    # A constant image stays constant under every general transform (gains, padding, filters).
    c = torch.full([2, 3, 16, 16], 0.7)
    for q in (0.2, 0.8):
        torch.testing.assert_close(AugmentPipe(**augpipe_specs['geom'])(c, debug_percentile=q), c, atol=1e-5, rtol=0)


def test_fractional_translation_by_whole_pixels():
    x = _smooth(1, 3, 32)
    q = 0.5 * (1 + math.erf(1 / 8))  # NVIDIA's debug value erfinv(2q-1) * 0.125 = 1/64: half a pixel at 32
    y = AugmentPipe(xfrac=1, xfrac_std=0.125 * 64 / 32)(x, debug_percentile=q)  # -> exactly 1 pixel
    torch.testing.assert_close(y[..., 4:-4, 5:-4], x[..., 3:-5, 4:-5], atol=2e-4, rtol=0)


def test_brightness_statistics():
    torch.manual_seed(0)
    n, std = 4000, 0.2
    x = torch.rand(n, 3, 2, 2) * 2 - 1
    delta = AugmentPipe(brightness=1, brightness_std=std)(x) - x
    b = delta[:, 0, 0, 0]
    torch.testing.assert_close(delta, b[:, None, None, None].expand_as(delta), atol=1e-6, rtol=0)  # same shift everywhere
    assert abs(b.mean().item()) < 4 * std / math.sqrt(n)
    assert abs(b.std().item() / std - 1) < 0.05
    pipe = AugmentPipe(brightness=1)
    pipe.p.fill_(0.5)  # about half of the images are shifted
    frac = ((pipe(x) - x).abs().amax(dim=(1, 2, 3)) > 0).float().mean().item()
    assert abs(frac - 0.5) < 0.04


def test_contrast_statistics():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 2, 2) + 0.5
    ratio = AugmentPipe(contrast=1)(x)[:, 0, 0, 0] / x[:, 0, 0, 0]
    assert abs(torch.log2(ratio).std().item() / 0.5 - 1) < 0.05


def test_color_transforms_on_gray_pixels():
    gray = torch.rand(64, 1, 4, 4).expand(64, 3, 4, 4).contiguous()
    torch.manual_seed(0)
    torch.testing.assert_close(AugmentPipe(hue=1, saturation=1)(gray), gray, atol=1e-5, rtol=0)  # gray axis fixed
    torch.testing.assert_close(AugmentPipe(lumaflip=1)(gray, debug_percentile=0.9), -gray, atol=1e-6, rtol=0)
    one = gray[:, :1]
    torch.testing.assert_close(AugmentPipe(brightness=1)(one, debug_percentile=0.9),
                               one + torch.erfinv(torch.tensor(0.8)) * 0.2, atol=1e-6, rtol=0)


def test_cutout_center_square():
    x = torch.ones(2, 3, 16, 16)
    y = AugmentPipe(cutout=1)(x, debug_percentile=0.5)
    assert (y[:, :, 4:12, 4:12] == 0).all() and y.sum() == 2 * 3 * (256 - 64)


def test_noise_std():
    torch.manual_seed(0)
    x = torch.zeros(2, 3, 64, 64)
    q = 0.6
    y = AugmentPipe(noise=1)(x, debug_percentile=q)
    expected = torch.erfinv(torch.tensor(q)).item() * 0.1
    assert abs(y.std().item() / expected - 1) < 0.03


def test_imgfilter_impulse_response():
    """The filter is separable, per sample, with band gains renormalized to the expected power
    spectrum [10, 1, 1, 1] / 13 (Appendix B.4): check its impulse response."""
    q, std = 0.9, 1.0
    x = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    x[..., 32, 32] = 1
    pipe = AugmentPipe(imgfilter=1, imgfilter_std=std)
    y = pipe(x, debug_percentile=q)
    gain = 2 ** (torch.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)) * std)
    power = torch.tensor([10, 1, 1, 1], dtype=torch.float64) / 13
    g = torch.ones(4, dtype=torch.float64)
    for i in range(4):  # amplify band i, keep the expected power
        t = torch.ones(4, dtype=torch.float64)
        t[i] = gain
        g = g * t / (power * t ** 2).sum().sqrt()
    f = g @ pipe.Hz_fbank.double()  # [43]
    expected = torch.zeros_like(x)
    expected[0, 0, 32 - 21:32 + 22, 32 - 21:32 + 22] = torch.outer(f, f)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)
    assert (y - x).abs().max() > 0.01


def test_bad_inputs():
    with pytest.raises(ValueError, match=r'expected float images \[N, C, H, W\]'):
        AugmentPipe(xflip=1)(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match='expected float images'):
        AugmentPipe(xflip=1)(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match='color transforms need 1 or 3 channels, got 2'):
        AugmentPipe(hue=1)(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match='imgfilter needs images larger than 21 pixels, got 16x16'):
        AugmentPipe(imgfilter=1)(torch.zeros(1, 3, 16, 16))

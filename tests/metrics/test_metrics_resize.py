"""Protocols: each resize reproduces its reference implementation exactly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pstyle.metrics.resize import PROTOCOLS, preprocess, resize_pil_bicubic_float, resize_tf1_bilinear


def _images(n, h, w, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('hw', [(32, 32), (64, 64), (256, 256), (300, 300), (500, 500), (40, 75), (299, 299)])
def test_tf1_resize_bit_exact_with_torch_fidelity(hw):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    x = _images(2, *hw).float()
    ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    out = resize_tf1_bilinear(x, 299)
    assert out.shape == (2, 3, 299, 299)
    assert torch.equal(out, ref)


def test_tf1_resize_differs_from_antialiased_and_torch_bilinear():
    # The protocols are really different: a 4x downsample without antialiasing aliases.
    x = _images(1, 1196, 1196).float()
    tf1 = resize_tf1_bilinear(x, 299)
    aa = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False, antialias=True)
    pt = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
    assert (tf1 - aa).abs().mean() > 5
    assert (tf1 - pt).abs().mean() > 5


@pytest.mark.parametrize('hw', [(48, 48), (256, 256), (37, 64)])
def test_clean_resize_equals_clean_fid(hw):
    from cleanfid.resize import make_resizer
    ref_fn = make_resizer('PIL', False, 'bicubic', (299, 299))
    imgs = _images(2, *hw).permute(0, 2, 3, 1).numpy()
    ours = resize_pil_bicubic_float(imgs, 299)
    for n in range(2):
        ref = ref_fn(imgs[n])
        assert ref.dtype == ours.dtype == np.float32
        np.testing.assert_array_equal(ours[n], ref)


def test_clean_preprocess_matches_clean_fid_normalization():
    from cleanfid.resize import make_resizer
    imgs = _images(1, 64, 64)
    ref = torch.from_numpy(make_resizer('PIL', False, 'bicubic', (299, 299))(imgs[0].permute(1, 2, 0).numpy()))
    ref = (ref.permute(2, 0, 1)[None] - 128) / 128           # clean-fid's InceptionV3W normalization
    assert torch.equal(preprocess(imgs, 'clean'), ref)


def test_legacy_pytorch_matches_pytorch_fid_input():
    import torchvision.transforms.functional as TF
    imgs = _images(2, 64, 80)
    # pytorch-fid: ToTensor() -> F.interpolate(bilinear, align_corners=False) -> 2x - 1
    x = torch.stack([TF.to_tensor(TF.to_pil_image(im)) for im in imgs])
    ref = 2 * F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False) - 1
    assert torch.equal(preprocess(imgs, 'legacy_pytorch'), ref)


def test_legacy_tf_normalization_and_range():
    imgs = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 299, 299).contiguous()
    x = preprocess(imgs, 'legacy_tf')
    assert x[0, :, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]


def test_imagenet_target_matches_torch_fidelity_vgg_input():
    import torchvision
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    imgs = _images(2, 50, 50)
    x = interpolate_bilinear_2d_like_tensorflow1x(imgs.float(), size=(224, 224), align_corners=False)
    ref = torchvision.transforms.functional.normalize(x, (255 * 0.485, 255 * 0.456, 255 * 0.406),
                                                      (255 * 0.229, 255 * 0.224, 255 * 0.225))
    assert torch.equal(preprocess(imgs, 'legacy_tf', 224, 'imagenet'), ref)


def test_protocols_give_different_inputs():
    imgs = _images(1, 100, 100)
    outs = [preprocess(imgs, p) for p in PROTOCOLS]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j], atol=1e-3)


def test_bad_protocol_and_dtype():
    with pytest.raises(ValueError, match="unknown protocol 'tf2'; choose one of legacy_tf, clean, legacy_pytorch"):
        preprocess(_images(1, 8, 8), 'tf2')
    with pytest.raises(AssertionError, match='expected a uint8 tensor'):
        preprocess(torch.rand(1, 3, 8, 8))
    with pytest.raises(AssertionError, match=r'expected \[N,3,H,W\]'):
        preprocess(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))

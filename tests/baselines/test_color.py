"""Colour preservation (Gatys et al. 2016b): YIQ luminance transfer and colour histogram matching."""

import torch

from pstyle.baselines import color


def test_yiq_round_trip_is_exact():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(x)), x, atol=1e-12)
    grey = torch.rand(1, 1, 4, 4, dtype=torch.float64).expand(1, 3, 4, 4)
    yiq = color.rgb_to_yiq(grey)
    assert torch.allclose(yiq[:, 0], grey[:, 0], atol=1e-6) and yiq[:, 1:].abs().max() < 1e-6  # grey: Y = value, no colour


def test_combine_luminance_keeps_the_content_colour_and_the_result_luminance():
    result, content = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = color.rgb_to_yiq(color.combine_luminance(result, content))
    assert torch.allclose(out[:, 1:], color.rgb_to_yiq(content)[:, 1:], atol=1e-12)
    assert torch.allclose(out[:, :1], color.luminance(result), atol=1e-12)


def test_match_luminance_takes_the_content_mean_and_deviation():
    style, content = torch.rand(2, 1, 9, 7, dtype=torch.float64) * 0.3, torch.rand(2, 1, 5, 5, dtype=torch.float64)
    out = color.match_luminance(style, content)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), content.mean(dim=(1, 2, 3)), atol=1e-12)
    assert torch.allclose(out.std(dim=(1, 2, 3)), content.std(dim=(1, 2, 3)), atol=1e-12)


def test_histogram_matching_gives_the_style_the_content_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.0, 0.5, 0.4]], dtype=torch.float64)
    style = torch.einsum('ij,njhw->nihw', mix, torch.rand(2, 3, 12, 10, generator=g, dtype=torch.float64))
    content = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64) * 0.5 + 0.25
    out = color.match_histogram(style, content)
    mean_o, cov_o = color._mean_cov(out)
    mean_c, cov_c = color._mean_cov(content)
    assert torch.allclose(mean_o, mean_c, atol=1e-12) and torch.allclose(cov_o, cov_c, atol=1e-10)
    # The map is affine and per image: the second style image is matched to the second content image.
    assert not torch.allclose(mean_o[0], mean_o[1])


def test_histogram_matching_of_a_flat_style_stays_finite():
    out = color.match_histogram(torch.full((1, 3, 4, 4), 0.5), torch.rand(1, 3, 4, 4))
    assert torch.isfinite(out).all()

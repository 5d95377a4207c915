"""Colour preservation for neural style transfer (Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving
Color in Neural Artistic Style Transfer"): luminance-only transfer in YIQ, and colour histogram matching
of the style image to the content image (mean and covariance, Sec. 2). Images are float [N,3,H,W] RGB."""

import torch

# NTSC RGB -> YIQ (rows Y, I, Q). Y is the luminance the paper transfers; I and Q carry the colour.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114),
               (0.595716, -0.274453, -0.321263),
               (0.211456, -0.522591, 0.311135))


def _matrix(x, inverse=False):
    m = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    return (torch.linalg.inv(m) if inverse else m).to(device=x.device, dtype=x.dtype)


def rgb_to_yiq(x):
    return torch.einsum('ij,njhw->nihw', _matrix(x), x)


def yiq_to_rgb(x):
    return torch.einsum('ij,njhw->nihw', _matrix(x, inverse=True), x)


def luminance(x):
    """Y of RGB [N,3,H,W] -> [N,1,H,W]."""
    return rgb_to_yiq(x)[:, :1]


def match_luminance(style_y, content_y):
    """Style luminance [N,1,H,W] shifted and scaled to the content luminance's mean and standard deviation
    (Eq. 1 of the paper: L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c), per image."""
    mu_s, sd_s = style_y.mean(dim=(1, 2, 3), keepdim=True), style_y.std(dim=(1, 2, 3), keepdim=True)
    mu_c, sd_c = content_y.mean(dim=(1, 2, 3), keepdim=True), content_y.std(dim=(1, 2, 3), keepdim=True)
    return sd_c / sd_s.clamp_min(1e-8) * (style_y - mu_s) + mu_c


def combine_luminance(result, content):
    """The result's luminance Y with the content's colour (I, Q): the output of luminance-only transfer."""
    yiq = torch.cat([luminance(result), rgb_to_yiq(content)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq)


def _mean_cov(x):
    flat = x.flatten(2).double()                                          # [N,3,HW]
    mean = flat.mean(dim=2, keepdim=True)
    centred = flat - mean
    return mean, centred @ centred.transpose(1, 2) / flat.shape[2]        # [N,3,1], [N,3,3]


def _sym_power(cov, power, eps=1e-8):
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag_embed(vals.clamp_min(eps) ** power) @ vecs.transpose(1, 2)


def match_histogram(style, content, eps=1e-8):
    """Affine recolouring of `style` [N,3,H,W] so its RGB mean and covariance equal those of `content`
    [N,3,H',W'] (paper Sec. 2, the "Image Analogies" variant: A = Sigma_C^1/2 Sigma_S^-1/2,
    b = mu_C - A mu_S). Exact up to `eps` regularisation of a singular style covariance; no clipping."""
    mu_s, cov_s = _mean_cov(style)
    mu_c, cov_c = _mean_cov(content)
    A = _sym_power(cov_c, 0.5, eps) @ _sym_power(cov_s, -0.5, eps)        # [N,3,3]
    out = A @ (style.flatten(2).double() - mu_s) + mu_c
    return out.view(style.shape).to(style.dtype)

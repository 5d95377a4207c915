"""Stylization: one per-layer control for layer swapping, weight blending and latent mixing.

- `layer_weights`: the per-W+-row weight specification (--weights, --swap-res, --blend-width, presets).
- `blend`: blending two generators of the same architecture, tensor by tensor, per owning W+ row.
- `mix`: per-row mixing of W+ latents; style latents from seeds, saved latents or exemplars.
- `pipeline`: photo -> portrait (align, project, render, paste back) with a manifest.
- `grid`: labelled figures of photos x swap resolutions or style strengths.
"""

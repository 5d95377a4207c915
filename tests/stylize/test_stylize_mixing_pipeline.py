"""The pipeline through dlib alignment, latent mixing from saved latents, and paste-back."""

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.projectors import align
from pstyle.stylize import layer_weights as lw
from pstyle.stylize import pipeline
from pstyle.models import render as gen
from pstyle.models import render as rendering
from pstyle.models.checkpoint import save_network

import skimage.data as skimage_data  # noqa: E402  (dev extra: the public-domain test photo)


@pytest.fixture(scope='module')
def run(tmp_path_factory, make_G):
    root = tmp_path_factory.mktemp('stylize_align')
    G = make_G(seed=4)
    save_network(root / 'a.pt', G_ema=G)
    photos = root / 'photos'
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / 'astronaut.png')
    Image.new('RGB', (64, 64), (128, 128, 128)).save(photos / 'blank.png')  # No face.
    style = gen.seeds_to_ws(G, [11, 12]).numpy()
    np.savez(root / 'styles.npz', w=style, names=np.array(['anna', 'ben']))
    cfg = pipeline.StylizeConfig(base=str(root / 'a.pt'), spec=lw.make_spec(preset='fine'),
                                 mix_style=f'latents:{root / "styles.npz"}:ben', paste_back=True,
                                 project=dict(num_steps=2, lpips_weight=0.0, mse_weight=1.0, w_avg_samples=200),
                                 metrics=False, device='cpu')
    manifest = pipeline.stylize_photos(photos, root / 'out', cfg, log=lambda _: None)
    return manifest, root, G, style[1]


def test_alignment_and_no_face(run):
    manifest, root, _, _ = run
    assert manifest['num_ok'] == 1
    [failure] = manifest['failures']
    assert failure['stage'] == 'align' and 'blank.png: no face found' in failure['error']
    expected = align.align_face(skimage_data.astronaut(), size=32)[0].image
    assert np.array_equal(np.asarray(Image.open(root / 'out' / 'aligned' / 'astronaut.png')), np.asarray(expected))


def test_mixing_copies_the_fine_rows_of_the_style(run):
    manifest, root, G, style = run
    assert manifest['styles'] == ['ben'] and manifest['networks']['styled'] is None
    data = np.load(root / 'out' / 'latents.npz')
    ws = torch.from_numpy(data['w'])
    noise = {k[len('noise/'):]: torch.from_numpy(data[k])[:, None] for k in data.files if k.startswith('noise/')}
    # Reference without stylize.mix: rows of the `fine` preset (16 and 32 at 32x32) taken from the style.
    rows = [i for i, r in enumerate([4, 8, 8, 16, 16, 32, 32, 32]) if r >= 16]
    mixed = ws.clone()
    mixed[:, rows] = torch.from_numpy(style)[rows]
    expected = gen.to_uint8(rendering.render(G, mixed, noise))[0]
    assert np.array_equal(np.asarray(Image.open(root / 'out' / 'astronaut.png')), expected)


def test_paste_back_into_the_photo(run):
    manifest, root, _, _ = run
    entry = [e for e in manifest['items'] if e['status'] == 'ok'][0]
    assert entry['portraits']['astronaut']['pasted'] == 'pasted/astronaut.png'
    pasted = np.asarray(Image.open(root / 'out' / 'pasted' / 'astronaut.png')).astype(int)
    photo = skimage_data.astronaut().astype(int)
    assert pasted.shape == photo.shape
    changed = np.abs(pasted - photo).max(axis=2) > 0
    quad = np.array(align.align_face(skimage_data.astronaut(), size=32)[0].transform['quad'])
    (cx, cy), half = quad.mean(axis=0).astype(int), int(np.linalg.norm(quad[3] - quad[0]) / 4)
    assert changed[cy - half:cy + half, cx - half:cx + half].mean() > 0.9   # The middle of the face square.
    outside = np.ones_like(changed)
    (x0, y0), (x1, y1) = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    outside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = False
    assert changed.any() and not changed[outside].any()                     # Outside the square: untouched.
    assert 'paste' in entry['seconds']

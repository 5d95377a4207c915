"""Image sources: folders, zips, generator networks, and every kind of bad input."""

import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pstyle.metrics.inputs import (FolderSource, InputError, NetworkSource, ZipSource, decode_image, iter_batches,
                            open_images, pair_by_name, quantize, seed_latent)



def _all(source, batch_size=4):
    idx, imgs = [], []
    for i, b in iter_batches(source, range(len(source)), batch_size, num_workers=0):
        idx += i
        imgs.append(b)
    return idx, torch.cat(imgs)


def _png16(path, arr):
    """Write a 16-bit PNG (PIL cannot write 48-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b''.join(b'\x00' + arr[y].astype('>u2').tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))  # noqa: E731
    ihdr = struct.pack('>IIBBBBB', w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_folder_is_sorted_recursive_and_exact(tmp_path, imgtools):
    imgs = imgtools.make_images(5, size=16)
    imgtools.write_folder(tmp_path / 'd', imgs[:3])
    imgtools.write_folder(tmp_path / 'd' / 'sub', imgs[3:])
    (tmp_path / 'd' / 'notes.txt').write_text('not an image')
    src = open_images(str(tmp_path / 'd'))
    assert isinstance(src, FolderSource)
    assert src.names == ['000.png', '001.png', '002.png', 'sub/000.png', 'sub/001.png']
    idx, batch = _all(src, 2)
    assert idx == list(range(5)) and batch.dtype == torch.uint8 and batch.shape == (5, 3, 16, 16)
    assert torch.equal(batch[3], torch.from_numpy(imgs[3]).permute(2, 0, 1))


def test_zip_equals_folder(tmp_path, imgtools):
    imgs = imgtools.make_images(4, size=16)
    folder = imgtools.write_folder(tmp_path / 'd', imgs)
    zpath = tmp_path / 'd.zip'
    with zipfile.ZipFile(zpath, 'w') as z:
        for n in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, n), f'img/{n}')
        z.writestr('dataset.json', '{"labels": null}')
    src = open_images(str(zpath))
    assert isinstance(src, ZipSource) and len(src) == 4
    assert torch.equal(_all(src)[1], _all(open_images(folder))[1])


def test_zip_in_worker_processes(tmp_path, imgtools):
    folder = imgtools.write_folder(tmp_path / 'd', imgtools.make_images(4, size=16))
    with zipfile.ZipFile(tmp_path / 'd.zip', 'w') as z:
        for n in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, n), n)
    src = open_images(str(tmp_path / 'd.zip'))
    batches = list(iter_batches(src, range(4), 2, num_workers=2))
    assert [b[0] for b in batches] == [[0, 1], [2, 3]]


def test_empty_and_missing_paths(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match=r'empty: no images found \(looked for .png, .jpg'):
        open_images(str(tmp_path / 'empty'))
    with pytest.raises(InputError, match='nothere: no such file or folder'):
        open_images(str(tmp_path / 'nothere'))
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(InputError, match='x.txt: neither a folder nor a zip of images'):
        open_images(str(tmp_path / 'x.txt'))


def test_mixed_sizes_name_the_file(tmp_path, imgtools):
    folder = imgtools.write_folder(tmp_path / 'd', imgtools.make_images(3, size=16))
    Image.fromarray(imgtools.make_images(1, size=20)[0]).save(tmp_path / 'd' / '001.png')
    with pytest.raises(InputError, match=r'001.png: size 20x20 differs from 000.png \(16x16\)'):
        _all(open_images(folder))


def test_corrupt_file_among_good_ones_is_named(tmp_path, imgtools):
    folder = imgtools.write_folder(tmp_path / 'd', imgtools.make_images(4, size=16))
    data = (tmp_path / 'd' / '002.png').read_bytes()
    (tmp_path / 'd' / '002.png').write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=r'002.png: cannot decode image'):
        _all(open_images(folder))
    with pytest.raises(InputError, match=r'002.png: cannot decode image'):  # also from worker processes
        list(iter_batches(open_images(folder), range(4), 2, num_workers=1))


def test_grayscale_rgba_palette_are_converted_with_warnings(tmp_path, imgtools):
    rgb = imgtools.make_images(1, size=16)[0]
    folder = tmp_path / 'd'
    folder.mkdir()
    Image.fromarray(rgb).save(folder / 'a.png')
    Image.fromarray(rgb[:, :, 0]).save(folder / 'b_gray.png')
    Image.fromarray(rgb[:, :, 0]).save(folder / 'c_gray.png')
    Image.fromarray(np.dstack([rgb, np.full((16, 16), 7, np.uint8)])).save(folder / 'd_rgba.png')
    Image.fromarray(rgb).convert('P').save(folder / 'e_pal.png')
    src = open_images(str(folder))
    with pytest.warns(UserWarning) as rec:
        _, batch = _all(src)
    messages = [str(w.message) for w in rec]
    assert any('b_gray.png: grayscale image; the channel is repeated to RGB' in m for m in messages)
    assert any('d_rgba.png: image with an alpha channel; alpha is dropped' in m for m in messages)
    assert not any('c_gray.png' in m for m in messages)                  # one warning per kind
    assert src.notes_summary() == {'alpha': dict(count=1, first='d_rgba.png'),
                                   'grayscale': dict(count=2, first='b_gray.png'),
                                   'palette': dict(count=1, first='e_pal.png')}
    assert torch.equal(batch[1], torch.from_numpy(rgb[:, :, 0])[None].expand(3, 16, 16))
    assert torch.equal(batch[3], torch.from_numpy(rgb).permute(2, 0, 1))


def test_16bit_images_are_rounded_and_flagged(tmp_path):
    g = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    rgb = np.dstack([g, g // 2, g // 3]).astype(np.uint16)
    _png16(tmp_path / 'g16.png', g)
    _png16(tmp_path / 'rgb16.png', rgb)
    arr, note = decode_image(str(tmp_path / 'g16.png'), 'g16.png')
    assert note == '16bit' and arr.shape == (8, 8, 3)
    np.testing.assert_array_equal(arr[:, :, 0], np.round(g / 257).astype(np.uint8))
    arr, note = decode_image(str(tmp_path / 'rgb16.png'), 'rgb16.png')
    assert note == '16bit'
    np.testing.assert_array_equal(arr, (rgb >> 8).astype(np.uint8))


def test_32bit_and_float_images_are_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.float32), mode='F').save(tmp_path / 'f.tiff')
    with pytest.raises(InputError, match=r"f.tiff: unsupported image mode 'F'"):
        decode_image(str(tmp_path / 'f.tiff'), str(tmp_path / 'f.tiff'))


def test_fingerprint_follows_contents(tmp_path, imgtools):
    folder = imgtools.write_folder(tmp_path / 'd', imgtools.make_images(3, size=16))
    fp = open_images(folder).fingerprint()
    assert fp == open_images(folder).fingerprint()
    img = np.array(Image.open(tmp_path / 'd' / '001.png'))
    img[0, 0, 0] ^= 1                                              # one bit, same size, same name
    Image.fromarray(img).save(tmp_path / 'd' / '001.png')
    assert open_images(folder).fingerprint() != fp
    os.rename(tmp_path / 'd' / '001.png', tmp_path / 'd' / '005.png')
    assert open_images(folder).fingerprint() not in (fp,)


def test_pair_by_name(tmp_path, imgtools):
    imgs = imgtools.make_images(3, size=8)
    a = imgtools.write_folder(tmp_path / 'a', imgs)
    b = imgtools.write_folder(tmp_path / 'b', imgs[:2], ext='jpg')
    Image.fromarray(imgs[0]).save(tmp_path / 'b' / 'extra.jpg')
    pairs, only_a, only_b = pair_by_name(open_images(a), open_images(b))
    assert pairs == [(0, 0), (1, 1)] and only_a == ['002'] and only_b == ['extra']


def test_quantize_is_nvidias():
    img = torch.tensor([-1.5, -1.0, -0.001, 0.0, 0.5, 0.999, 1.0, 2.0]).view(1, 1, 1, 8)
    assert quantize(img).flatten().tolist() == [0, 0, 127, 128, 191, 255, 255, 255]


def test_seed_latent_matches_nvidia_scripts():
    z, c = seed_latent(7, 32)
    np.testing.assert_array_equal(z, np.random.RandomState(7).randn(32))
    assert c.shape == (0,)
    z, c = seed_latent(7, 32, c_dim=5, class_idx=3)
    assert c.tolist() == [0, 0, 0, 1, 0]


class _TinyG(torch.nn.Module):
    """Stands in for the Generator API: image = tanh of a fixed projection of z."""
    z_dim, c_dim, img_resolution, img_channels = 8, 0, 8, 3

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 3 * 8 * 8)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='const'):
        return torch.tanh(self.proj(z)).view(-1, 3, 8, 8) * 1.2


def test_network_source_is_per_seed_and_quantized():
    torch.manual_seed(0)
    G = _TinyG()
    src = NetworkSource(G, seeds=range(10, 15), device='cpu')
    a = torch.cat([b for _, b in iter_batches(src, range(5), 2)])
    b = torch.cat([b for _, b in iter_batches(src, range(5), 5)])
    assert torch.equal(a, b) and a.dtype == torch.uint8               # image k independent of batch size
    z = torch.from_numpy(np.random.RandomState(12).randn(8)).float()[None]
    assert torch.equal(a[2:3], quantize(G(z, None)))
    assert src.describe()['seeds'] == [10, 14]


def test_network_source_with_real_generator(tmp_path):
    from pstyle.models.checkpoint import save_network
    from pstyle.models.networks import Generator
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64))
    G.eval()  # in training mode NVIDIA's mapping updates w_avg on every call
    save_network(str(tmp_path / 'g.pt'), G_ema=G)
    src = NetworkSource(str(tmp_path / 'g.pt'), seeds=[0, 1], truncation_psi=0.7, device='cpu')
    _, imgs = next(iter_batches(src, [0, 1], 2))
    z = torch.from_numpy(np.random.RandomState(1).randn(1, 32)).float()
    with torch.no_grad():
        ref = quantize(G(z, torch.zeros(1, 0), truncation_psi=0.7, noise_mode='const'))
    assert imgs.shape == (2, 3, 32, 32) and torch.equal(imgs[1:], ref)


def test_network_source_bad_input():
    with pytest.raises(InputError, match='no seeds to generate'):
        NetworkSource(_TinyG(), seeds=[])

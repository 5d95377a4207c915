"""e4e / pSp encoder files: the W-only variants, batching, resizing, and every bad file or input a user can give."""

import os
import pickle
import types
import urllib.error
import urllib.request

import pytest
import torch
import torch.nn.functional as F

from pstyle.projectors import encoder_nets
from pstyle.projectors.encoder import check_encoder_matches, load_encoder, save_encoder
from pstyle.models.checkpoint import CheckpointError, save_network


def random_encoder(encoder_type, size, seed=0):
    """An encoder for a `size` x `size` generator with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = encoder_nets.build_encoder(encoder_type, encoder_nets.num_styles(size))
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 1.5)
            elif name.endswith(('running_mean', 'bias')):
                t.normal_(0, 0.1)
    return net


def write_encoder(path, encoder_type='Encoder4Editing', size=16, latent_avg_rows=None, **opts):
    net = random_encoder(encoder_type, size)
    rows = latent_avg_rows or encoder_nets.num_styles(size)
    size_key = 'stylegan_size' if encoder_type == 'Encoder4Editing' else 'output_size'
    opts = {'encoder_type': encoder_type, size_key: size, 'input_nc': 3, 'start_from_latent_avg': True, **opts}
    save_encoder(path, net, torch.randn(rows, 512), opts)
    return path


@pytest.fixture(scope='module')
def e4e16(tmp_path_factory):
    """A small e4e file: 6 W+ rows (a 16x16 generator), so only the coarse and middle rows."""
    return write_encoder(tmp_path_factory.mktemp('enc') / 'e4e16.pt')


@pytest.fixture(scope='module')
def images():
    torch.manual_seed(3)
    return torch.rand(3, 3, 256, 256) * 2 - 1


def reference_codes(path, x):
    """The unfused network's output before latent_avg: the original's `encoder(x)`."""
    encoder = load_encoder(path, optimize=False)
    with torch.no_grad():
        return encoder.net(x), encoder


# ----------------------------------------------------------------------------
# Variants and logic.

def test_w_encoder_puts_one_w_plus_latent_avg_on_every_row(tmp_path, images):
    path = write_encoder(tmp_path / 'w.pt', 'BackboneEncoderUsingLastLayerIntoW', 16, latent_avg_rows=1, learn_in_w=True)
    codes, reference = reference_codes(path, images[:2])
    encoder = load_encoder(path)
    assert (encoder.kind, encoder.num_ws, encoder.w_dim, codes.shape) == ('psp', 6, 512, (2, 512))
    with torch.no_grad():
        ws = encoder(images[:2])
    assert ws.shape == (2, 6, 512)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))                       # One w, broadcast.
    torch.testing.assert_close(ws[:, 0], codes + reference.latent_avg[0], atol=1e-4, rtol=1e-4)


def test_wplus_baseline_predicts_every_row_at_once(tmp_path, images):
    path = write_encoder(tmp_path / 'wplus.pt', 'BackboneEncoderUsingLastLayerIntoWPlus', 16)
    codes, reference = reference_codes(path, images[:2])
    with torch.no_grad():
        ws = load_encoder(path)(images[:2])
    assert codes.shape == ws.shape == (2, 6, 512) and (ws[:, 0] - ws[:, 1]).abs().max() > 0
    torch.testing.assert_close(ws, codes + reference.latent_avg, atol=1e-4, rtol=1e-4)


def test_psp_without_start_from_latent_avg_returns_the_codes(tmp_path, images):
    path = write_encoder(tmp_path / 'psp.pt', 'GradualStyleEncoder', 4, start_from_latent_avg=False)
    codes, reference = reference_codes(path, images[:1])
    assert not reference.add_latent_avg and codes.shape == (1, 2, 512)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(path)(images[:1]), codes, atol=1e-4, rtol=1e-4)


def test_e4e_rows_are_w0_plus_offsets(e4e16, images):
    """Row 0 is styles[0](c3); row i adds styles[i] of c3 (rows 1-2) or of the pyramid level p2 (rows 3-5)."""
    codes, reference = reference_codes(e4e16, images[:1])
    net = reference.net
    with torch.no_grad():
        c1, c2, c3 = net.pyramid_taps(images[:1])
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode='bilinear', align_corners=True) + net.latlayer1(c2)
        w0 = net.styles[0](c3)
        expected = [w0] + [w0 + net.styles[i](c3 if i < 3 else p2) for i in range(1, 6)]
    torch.testing.assert_close(codes, torch.stack(expected, 1), atol=1e-5, rtol=1e-5)


def test_results_do_not_depend_on_the_batch(e4e16, images):
    encoder = load_encoder(e4e16)
    with torch.no_grad():
        batched = encoder(images)
        single = torch.cat([encoder(images[i:i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_other_image_sizes_are_resized_bilinearly_with_antialiasing(e4e16, images):
    encoder = load_encoder(e4e16)
    big = F.interpolate(images[:1], size=(512, 384), mode='bicubic', align_corners=False)
    resized = F.interpolate(big, size=(256, 256), mode='bilinear', align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(encoder(big), encoder(resized), atol=0, rtol=0)


def test_save_encoder_writes_the_original_layout(e4e16):
    payload = torch.load(e4e16, weights_only=True)
    assert sorted(payload) == ['latent_avg', 'opts', 'state_dict'] and isinstance(payload['opts'], dict)
    assert all(k.startswith('encoder.') for k in payload['state_dict'])
    assert 'encoder.styles.5.linear.weight' in payload['state_dict']


# ----------------------------------------------------------------------------
# Bad inputs.

def test_bad_images_and_precisions_are_refused(e4e16):
    encoder = load_encoder(e4e16)
    with pytest.raises(ValueError, match=r'expects images \[N, 3, H, W\] in \[-1, 1\], got \[3, 256, 256\]'):
        encoder(torch.zeros(3, 256, 256))
    with pytest.raises(ValueError, match='fp16 needs a CUDA device'):
        load_encoder(e4e16, precision='fp16')
    with pytest.raises(ValueError, match='precision must be one of'):
        encoder(torch.zeros(1, 3, 256, 256), precision='int8')


def edit(src, dst, fn):
    payload = torch.load(src, weights_only=True)
    fn(payload)
    torch.save(payload, dst)
    return dst


def test_a_missing_tensor_is_named_with_the_file(e4e16, tmp_path):
    path = edit(e4e16, tmp_path / 'missing.pt', lambda p: p['state_dict'].pop('encoder.styles.4.linear.bias'))
    with pytest.raises(CheckpointError, match=r'missing\.pt .*missing tensors: styles\.4\.linear\.bias'):
        load_encoder(path)


def test_a_misshaped_tensor_is_named_with_both_shapes(e4e16, tmp_path):
    path = edit(e4e16, tmp_path / 'shape.pt',
                lambda p: p['state_dict'].__setitem__('encoder.latlayer1.weight', torch.zeros(512, 128, 1, 1)))
    with pytest.raises(CheckpointError, match=r'shape\.pt .*wrong shapes: latlayer1\.weight \[512, 128, 1, 1\] '
                                              r'\(expected \[512, 256, 1, 1\]\)'):
        load_encoder(path)


def test_opts_that_disagree_with_the_tensors_name_the_first_missing_row(e4e16, tmp_path):
    path = edit(e4e16, tmp_path / 'opts.pt', lambda p: p['opts'].__setitem__('stylegan_size', 1024))
    with pytest.raises(CheckpointError, match=r'opts\.pt \(Encoder4Editing, opts: 18 W\+ rows.*missing tensors: '
                                              r'styles\.6\.convs\.0\.weight'):
        load_encoder(path)


@pytest.mark.parametrize('change, message', [
    (lambda p: p.pop('opts'), r'has no opts dict'),
    (lambda p: p['opts'].__setitem__('encoder_type', 'SingleStyleCodeEncoder'), r"encoder_type 'SingleStyleCodeEncoder' "
                                                                               r'is not supported'),
    (lambda p: p['opts'].__setitem__('stylegan_size', 300), r"opts\['stylegan_size'\] = 300 is not a power-of-two"),
    (lambda p: p.pop('latent_avg'), r'latent_avg is missing'),
    (lambda p: p.__setitem__('latent_avg', torch.zeros(5, 512)), r'latent_avg has shape \[5, 512\]; expected \[512\]'),
])
def test_bad_opts_and_latent_avg_are_explained(e4e16, tmp_path, change, message):
    with pytest.raises(CheckpointError, match=r'bad\.pt.*' + message):
        load_encoder(edit(e4e16, tmp_path / 'bad.pt', change))


def test_generator_files_are_not_encoders(fixtures, tmp_path, make_G):
    with pytest.raises(CheckpointError, match=r'nvlabs_uncond32\.pkl is a plain pickle .*it was not unpickled.*not an '
                                              r'e4e/pSp encoder checkpoint'):
        load_encoder(fixtures / 'nvlabs_uncond32.pkl')
    with pytest.raises(CheckpointError, match=r'rosinality_32\.pt is not an e4e/pSp encoder checkpoint: no state_dict '
                                              r'with encoder\.\* tensors \(it holds a generator only\)'):
        load_encoder(fixtures / 'rosinality_32.pt')
    save_network(tmp_path / 'G.safetensors', G_ema=make_G())
    with pytest.raises(CheckpointError, match=r'G\.safetensors is a generator \(a portrait-stylegan network file\): '
                                              r'give it as --network, not an encoder'):
        load_encoder(tmp_path / 'G.safetensors')
    torch.save(dict(state_dict={'decoder.style.1.weight': torch.zeros(2)}, latent_avg=torch.zeros(512)),
               tmp_path / 'decoder_only.pt')
    with pytest.raises(CheckpointError, match=r'decoder_only\.pt is not an e4e/pSp encoder checkpoint.*generator only'):
        load_encoder(tmp_path / 'decoder_only.pt')


def test_truncated_empty_and_html_files_are_explained(e4e16, tmp_path):
    data = e4e16.read_bytes()
    (tmp_path / 'cut.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r'cut\.pt is truncated or not a valid torch file'):
        load_encoder(tmp_path / 'cut.pt')
    (tmp_path / 'empty.pt').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty\.pt is empty'):
        load_encoder(tmp_path / 'empty.pt')
    (tmp_path / 'page.pt').write_text('<!DOCTYPE html><html>Google Drive - Virus scan warning</html>')
    with pytest.raises(CheckpointError, match=r'page\.pt is an HTML/XML page \(a failed or blocked download\?\)'):
        load_encoder(tmp_path / 'page.pt')


class Payload:
    """Unpickling this would create the marker file: a stand-in for arbitrary code in a weight file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickles_with_code_are_refused_without_running_it(tmp_path):
    marker = tmp_path / 'pwned'
    (tmp_path / 'raw.pt').write_bytes(pickle.dumps(dict(state_dict={}, opts=Payload(str(marker))), protocol=4))
    with pytest.raises(CheckpointError, match=r'raw\.pt is a plain pickle'):
        load_encoder(tmp_path / 'raw.pt')
    torch.save(dict(state_dict={'encoder.x': torch.zeros(1)}, opts=Payload(str(marker))), tmp_path / 'evil.pt')
    with pytest.raises(CheckpointError, match=r'refusing to load .*evil\.pt: torch\.load\(weights_only=True\) rejected '
                                              r'it.*nothing from the file was executed'):
        load_encoder(tmp_path / 'evil.pt')
    assert not marker.exists()


def test_offline_short_name_says_which_file_to_put_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('PSTYLE_NETWORK_E4E_FFHQ_ENCODE', raising=False)
    with pytest.raises(CheckpointError) as info:
        load_encoder('e4e_ffhq_encode')
    message = str(info.value)
    assert 'cannot download https://drive.usercontent.google.com/' in message and 'no network' in message
    assert f'place it at {tmp_path / "cache" / "e4e_ffhq_encode.pt"}' in message
    assert '$PSTYLE_NETWORK_E4E_FFHQ_ENCODE' in message
    with pytest.raises(CheckpointError, match=r'no such encoder file: e4e_ffhq \(not a URL, and not one of the short '
                                              r'names demo-encoder, e4e_ffhq_encode, psp_ffhq_encode, psp_ffhq_toonify\)'):
        load_encoder('e4e_ffhq')


def test_short_names_use_the_cache_or_the_environment(e4e16, tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_NETWORK_PSP_FFHQ_TOONIFY', str(e4e16))
    assert load_encoder('psp_ffhq_toonify').source == str(e4e16)
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path))
    (tmp_path / 'psp_ffhq_encode.pt').write_bytes(e4e16.read_bytes())
    assert load_encoder('psp_ffhq_encode').source == str(tmp_path / 'psp_ffhq_encode.pt')


def test_generator_mismatch_names_the_file_and_both_shapes(e4e16, make_G):
    encoder = load_encoder(e4e16)
    check_encoder_matches(encoder, types.SimpleNamespace(num_ws=6, w_dim=512))
    G = make_G()
    with pytest.raises(CheckpointError, match=rf'encoder .*e4e16\.pt predicts W\+ \[6, 512\] but the generator takes '
                                              rf'\[{G.num_ws}, {G.w_dim}\].*generator_hint: e4e16\.pt'):
        check_encoder_matches(encoder, G)

"""e4e / pSp encoders against the original code's outputs (tests/fixtures/enc256_ref.npz), and fast-path parity."""

import warnings

import pytest
import torch

from pstyle.models.deltas import tensors_sha256
from pstyle.projectors.encoder import load_encoder
from pstyle.torch_utils.winograd import active_count

TOL = 1e-4  # W+ agreement with the original code, fp32 on the CPU.


@pytest.mark.parametrize('kind', ['e4e', 'psp'])
@pytest.mark.parametrize('optimize', [False, True], ids=['reference', 'fused'])
def test_wplus_matches_the_original_code(enc256, kind, optimize):
    ref = enc256['ref']
    encoder = load_encoder(enc256[kind], optimize=optimize)
    assert (encoder.kind, encoder.num_ws, encoder.w_dim, encoder.input_size) == (kind, 14, 512, 256)
    with torch.no_grad():
        ws = encoder(torch.from_numpy(ref['x']))
    assert ws.shape == (2, 14, 512) and ws.dtype == torch.float32
    torch.testing.assert_close(ws, torch.from_numpy(ref[f'{kind}_ws']), atol=TOL, rtol=0)
    # The encoder's own output, before latent_avg: the codes of the original.
    torch.testing.assert_close(ws - encoder.latent_avg, torch.from_numpy(ref[f'{kind}_codes']), atol=TOL, rtol=0)
    # The fused network runs its wide 3x3 convolutions as Winograd convolutions (the C++ plugin builds here).
    assert (active_count(encoder.net) > 0) == optimize


@pytest.mark.slow
def test_bf16_stays_close_to_fp32(enc256):
    """CPU bf16 autocast (emulated without AVX-512 BF16/AMX, so slow here): W+ within a few % of fp32."""
    encoder = load_encoder(enc256['psp'])
    x = torch.from_numpy(enc256['ref']['x'][:1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # "bf16 is emulated on this CPU"
        bf16 = encoder(x, precision='bf16')
    fp32 = torch.from_numpy(enc256['ref']['psp_ws'][:1])
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    rel = (bf16 - fp32).norm() / (fp32 - encoder.latent_avg).norm()
    assert 0 < rel < 0.05, rel


def test_generator_hint_is_the_decoder_hash_or_the_file_name(enc256, tmp_path):
    assert load_encoder(enc256['e4e']).generator_hint == enc256['e4e'].name
    payload = torch.load(enc256['e4e'], weights_only=True)
    decoder = {'style.1.weight': torch.ones(4, 4), 'conv1.conv.weight': torch.zeros(1, 4, 4, 3, 3)}
    payload['state_dict'].update({f'decoder.{k}': v for k, v in decoder.items()})
    torch.save(payload, tmp_path / 'with_decoder.pt')
    hint = load_encoder(tmp_path / 'with_decoder.pt').generator_hint
    assert hint == 'sha256:' + tensors_sha256({f'decoder.{k}': v for k, v in decoder.items()})
    payload['state_dict']['decoder.style.1.weight'][0, 0] = 2
    torch.save(payload, tmp_path / 'other_decoder.pt')
    assert load_encoder(tmp_path / 'other_decoder.pt').generator_hint != hint



@pytest.mark.cuda
@pytest.mark.parametrize('precision, tol', [('fp32', TOL), ('fp16', 0.05), ('bf16', 0.05)])
def test_cuda_matches_the_original_code(enc256, precision, tol, monkeypatch):
    """On a GPU: fp32 (TF32 off) to the fixture's tolerance; fp16/bf16 autocast within 5% of the output's norm."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    ref = enc256['ref']
    encoder = load_encoder(enc256['e4e'], 'cuda', precision=precision)
    with torch.no_grad():
        ws = encoder(torch.from_numpy(ref['x']).cuda()).cpu()
    expected = torch.from_numpy(ref['e4e_ws'])
    if precision == 'fp32':
        torch.testing.assert_close(ws, expected, atol=tol, rtol=0)
    else:
        assert (ws - expected).norm() / (expected - encoder.latent_avg.cpu()).norm() < tol

"""Encoder inversion in the server: `--encoder` / a style's "encoder", the `invert` field, health when the
encoder cannot load, and encoder passes batched like the generator's."""

import json

import numpy as np
import pytest
import torch

from pstyle_tests_serve_helpers import decode_png, photo_bytes
from pstyle.cmd_serve import build_config
from pstyle.models.checkpoint import load_network
from pstyle.projectors.encoder import load_encoder
from pstyle.serve import config as C
from pstyle.torch_utils.fileio import sha256_file

ALIGNED = dict(align='false')


def stylize(client, image=None, query='?format=json', **fields):
    image = photo_bytes() if image is None else image
    return client.post('/v1/stylize' + query, files=dict(image=('photo.png', image)), data={**ALIGNED, **fields})


def test_a_style_with_an_encoder_inverts_with_it_by_default(encoded_client, nets, encoder_file):
    r = stylize(encoded_client())
    assert r.status_code == 200, r.text
    manifest = r.json()['manifest']
    assert manifest['invert'] == 'encoder' and manifest['projection']['steps'] == 0
    assert manifest['projection']['settings'] is None and manifest['networks']['encoder']['file'] == encoder_file
    # The reconstruction is G_a at the encoder's latent (the server's 4-image pass may round differently).
    G = load_network(nets[0])['G_ema']
    photo = torch.from_numpy(decode_png(photo_bytes())).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        expected = (G.synthesis(load_encoder(encoder_file)(photo), noise_mode='const') * 127.5 + 128).clamp(0, 255)
    projected = decode_png(__import__('base64').b64decode(r.json()['images']['projected']))
    assert np.abs(projected.astype(int) - expected[0].permute(1, 2, 0).to(torch.uint8).numpy()).max() <= 1


def test_every_inversion_can_be_asked_for_and_steps_bound_the_optimizing_ones(encoded_client):
    client = encoded_client()
    runs = {m: stylize(client, invert=m, steps='3').json()['manifest'] for m in C.INVERT_MODES}
    assert {m: (r['invert'], r['projection']['steps']) for m, r in runs.items()} == {
        'encoder': ('encoder', 0), 'optimize': ('optimize', 3), 'encoder+optimize': ('encoder+optimize', 3)}
    r = stylize(client, invert='encoder+optimize', steps='6')
    assert r.status_code == 422 and 'steps must be in [1, 5] on this server, got 6' in r.json()['detail']
    plain = stylize(client, style='plain')
    assert plain.status_code == 200 and plain.json()['manifest']['invert'] == 'optimize'
    r = stylize(client, style='plain', invert='encoder+optimize')
    assert r.status_code == 422 and "invert=encoder+optimize needs an encoder, and style 'plain' has none" in r.json()['detail']


def test_healthz_and_styles_report_the_encoder_sha256_and_the_inversions(encoded_client, encoder_file):
    client = encoded_client()
    body = client.get('/healthz').json()
    encoder = body['styles']['toon']['encoder']
    assert (encoder['sha256'], encoder['kind'], encoder['notes']) == (sha256_file(encoder_file), 'pstyle', [])
    assert 'encoder' not in body['styles']['plain']
    styles = {s['name']: s for s in client.get('/v1/styles').json()['styles']}
    assert (styles['toon']['invert'], styles['toon']['inversions']) == ('encoder', list(C.INVERT_MODES))
    assert (styles['plain']['invert'], styles['plain']['inversions']) == ('optimize', ['optimize'])


def test_an_encoder_that_does_not_load_makes_healthz_503_with_the_reason_and_the_rest_still_works(encoded_client, nets):
    client = encoded_client(encoder=nets[0], expect=503)  # A generator file given as the encoder.
    body = client.get('/healthz').json()
    assert body['status'] == 'degraded'
    assert f"the encoder {nets[0]} of style 'toon' did not load" in body['reason']
    assert body['styles']['toon']['encoder']['error'] == body['reason']
    r = stylize(client)
    assert r.status_code == 503 and 'did not load' in r.json()['detail']
    assert stylize(client, invert='optimize').status_code == 200
    assert client.post('/v1/generate', json=dict(seeds=[1])).status_code == 200


def test_an_encoder_for_another_generator_shape_names_num_ws_and_w_dim(encoded_client, tiny_network_factory, tmp_path):
    other = tiny_network_factory.encoder_file(tmp_path / 'enc16.safetensors', tiny_network_factory(resolution=16))
    body = encoded_client(encoder=str(other), expect=503).get('/healthz').json()
    assert 'predicts W+ [6, 16] but the generator takes [8, 16]' in body['reason']


def test_missing_lpips_weights_leave_the_encoder_inversion_healthy(encoded_client):
    client = encoded_client(lpips_weight=1.0, plain=False)  # Healthy: the default inversion needs no LPIPS.
    assert stylize(client).status_code == 200
    r = stylize(client, invert='encoder+optimize')
    assert r.status_code == 503 and '--lpips-weight 0' in r.json()['detail']


def test_encoder_option_and_styles_file_key(nets, encoder_file, tmp_path):
    cfg = build_config(base=nets[0], styled=nets[1], config=None, mapping='from-a', api_key=None, cors_origin=(),
                       encoder=encoder_file)
    assert cfg.styles[0].encoder == encoder_file and cfg.styles[0].default_invert == 'encoder'
    [demo_style] = C.make_styles(encoder=encoder_file)
    assert (demo_style.base, demo_style.encoder) == ('demo', encoder_file)
    assert C.make_styles()[0].encoder == C.DEMO_ENCODER
    path = tmp_path / 'styles.json'
    path.write_text(json.dumps(dict(styles=dict(toon=dict(base=nets[0], styled=nets[1], encoder=encoder_file)))))
    assert C.load_styles_file(path)[0].encoder == encoder_file
    with pytest.raises(ValueError, match='name each style\'s encoder in the styles file'):
        C.make_styles(config=path, encoder=encoder_file)

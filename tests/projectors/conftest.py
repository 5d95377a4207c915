"""Shared fixtures of the projector tests: a tiny perturbed generator, a random-backbone LPIPS, one thread."""

import contextlib
import io
import json
import zlib

import numpy as np
import pytest
import torch



@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and a shared test machine is often oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def make_G(tiny_network_factory):
    """make_G(seed=1, resolution=16): the root factory's 16x16 generator (channel_base 256, moved by 0.1)."""
    return tiny_network_factory


@pytest.fixture(scope='module')
def G(make_G):
    return make_G()


@pytest.fixture(scope='module')
def lpips_model():
    from pstyle.metrics.lpips_utils import load_lpips
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return load_lpips('vgg', 'cpu', allow_random_backbone=True)


# ----------------------------------------------------------------------------
# e4e / pSp encoder checkpoints (tests/fixtures/README.md, "e4e and pSp encoders").

ENC256_OPTS = {
    'e4e': dict(encoder_type='Encoder4Editing', stylegan_size=256, input_nc=3, start_from_latent_avg=True,
                lpips_type='alex', id_lambda=0.1, progressive_steps=[0, 20000], batch_size=8),
    'psp': dict(encoder_type='GradualStyleEncoder', output_size=256, input_nc=3, label_nc=0, learn_in_w=False,
                start_from_latent_avg=True, lpips_lambda=0.8, id_lambda=0.1, batch_size=8),
}


def rebuild_from_recipe(recipe):
    """{name: tensor} from a fixture recipe {name: [shape, [rule, a, b]]}, one generator seeded per name."""
    out = {}
    for name, (shape, (rule, a, b)) in recipe.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        if rule == 'zeros':
            out[name] = torch.zeros(shape, dtype=torch.int64 if name.endswith('num_batches_tracked') else torch.float32)
        elif rule == 'uniform':
            out[name] = a + (b - a) * torch.rand(shape, generator=g)
        else:
            out[name] = a + b * torch.randn(shape, generator=g)
    return out


@pytest.fixture(scope='session')
def enc256(fixtures, tmp_path_factory):
    """{'e4e': path, 'psp': path, 'ref': the fixture's npz}: the recipe's encoders saved as the original training
    code saves them (torch.save of state_dict with encoder.* keys, latent_avg, opts as a plain dict)."""
    recipe = json.loads((fixtures / 'enc256_recipe.json').read_text())
    ref = dict(np.load(fixtures / 'enc256_ref.npz'))
    out, built = dict(ref=ref), {}
    for kind in ('e4e', 'psp'):
        key = json.dumps(recipe[f'{kind}_encoder_recipe'], sort_keys=True)  # The two recipes may be equal: build once.
        built[key] = built.get(key) or rebuild_from_recipe(recipe[f'{kind}_encoder_recipe'])
        state = {f'encoder.{k}': v for k, v in built[key].items()}
        path = tmp_path_factory.mktemp('enc256') / f'{kind}_enc256.pt'
        torch.save(dict(state_dict=state, latent_avg=torch.from_numpy(ref['latent_avg']), opts=ENC256_OPTS[kind]), path)
        out[kind] = path
    return out

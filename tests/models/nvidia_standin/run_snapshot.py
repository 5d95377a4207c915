"""Open a network snapshot the way NVIDIA's scripts do and run its networks on fixed inputs.

Usage: python -I run_snapshot.py SNAPSHOT.pkl INPUTS.npz OUTPUTS.npz
Inputs: z [N, z_dim], c [N, c_dim], ws [N, num_ws, w_dim], img [N, C, H, W]. Runs with this folder (the
stand-in for NVIDIA's repository) first on sys.path; any import of portrait-stylegan's packages fails.
"""

import copy
import importlib.abc
import io
import json
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import legacy  # noqa: E402
from torch_utils import persistence  # noqa: E402


PROJECT = ('pstyle', 'training', 'projectors', 'stylize', 'metrics', 'models')


class BlockProject(importlib.abc.MetaPathFinder):
    """The project may be pip-installed beside NVIDIA's code; the snapshot must not need it."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in PROJECT:
            raise ImportError(f'the snapshot tried to import {name} (portrait-stylegan)')
        return None


def main(snapshot, inputs, outputs):
    sys.meta_path.insert(0, BlockProject())
    here = os.path.dirname(os.path.abspath(__file__))
    assert os.path.dirname(os.path.dirname(os.path.abspath(persistence.__file__))) == here
    torch.set_num_threads(1)
    with open(snapshot, 'rb') as f:
        data = legacy.load_network_pkl(f)
    with open(snapshot, 'rb') as f:
        fp16 = legacy.load_network_pkl(f, force_fp16=True)
    G, D, G_ema = data['G'], data['D'], data['G_ema']
    assert data['augment_pipe'] is None and data['training_set_kwargs'] is None
    for net in (G, D, G_ema, G_ema.synthesis, G_ema.mapping):
        assert persistence.is_persistent(net), type(net)
        assert type(net).__module__ == 'torch_utils.persistence'  # The Decorator subclass.
        assert type(net).__mro__[1].__module__.startswith('_imported_module_')  # Built from module_src.
    x = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    z, c = x['z'], x['c']
    repickled = pickle.loads(pickle.dumps(G_ema))  # PTI and the visualizer pickle and copy networks again.
    buf = io.BytesIO()
    pickle.dump(dict(G=G, D=D, G_ema=G_ema), buf)
    buf.seek(0)
    reloaded = legacy.load_network_pkl(buf)
    with torch.no_grad():
        out = dict(
            ws_psi1=G_ema.mapping(z, c, truncation_psi=1),
            ws_psi05_cut4=G_ema.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4),
            img_psi1_const=G_ema(z, c, truncation_psi=1, noise_mode='const'),
            img_psi07_none=G_ema(z, c, truncation_psi=0.7, noise_mode='none'),
            img_unfused=G_ema(z, c, noise_mode='const', fused_modconv=False),
            img_force_fp32=G_ema.synthesis(G_ema.mapping(z, c), noise_mode='const', force_fp32=True),
            img_synthesis=G_ema.synthesis(x['ws'], noise_mode='const'),
            img_G=G(z, c, noise_mode='const'),
            d_logits=D(x['img'], c),
            img_repickled=repickled(z, c, noise_mode='const'),
            img_deepcopy=copy.deepcopy(G_ema)(z, c, noise_mode='const'),
            img_reloaded=reloaded['G_ema'](z, c, noise_mode='const'),
            img_fp16_loader=fp16['G_ema'](z, c, noise_mode='const'),
            d_logits_fp16_loader=fp16['D'](x['img'], c),
        )
    assert not [m for m in sys.modules if m.split('.')[0] in PROJECT]
    out = {k: v.numpy() for k, v in out.items()}
    out['requires_grad'] = np.array([p.requires_grad for p in G_ema.parameters()])
    out['training'] = np.array([m.training for m in G_ema.modules()])
    info = dict(G_ema=G_ema.init_kwargs, D=D.init_kwargs, num_ws=G_ema.num_ws, z_dim=G_ema.z_dim,
                c_dim=G_ema.c_dim, img_resolution=G_ema.img_resolution, G_ema_class=type(G_ema).__name__,
                D_class=type(D).__name__, fp16_num_fp16_res=fp16['G_ema'].init_kwargs['synthesis_kwargs']['num_fp16_res'])
    out['info'] = np.array(json.dumps(info))
    np.savez(outputs, **out)


if __name__ == '__main__':
    main(*sys.argv[1:])

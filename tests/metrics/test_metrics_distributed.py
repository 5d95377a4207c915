"""Sharded feature extraction under torchrun (gloo on the CPU) equals the single-process result."""

import textwrap

import numpy as np
import torch

from pstyle.metrics.inputs import iter_batches, open_images

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import torch
    from pstyle.metrics.api import source_features
    from pstyle.metrics.distributed import init_from_env, rank_world
    from pstyle.metrics.features import FeatureExtractor
    from pstyle.metrics.inputs import open_images

    class Means(FeatureExtractor):
        def __init__(self):
            super().__init__('means', '0' * 64, 'legacy_tf', torch.device('cpu'), ('pool3',))
            self.seen = 0
        def __call__(self, images, features=('pool3',)):
            self.seen += len(images)
            return dict(pool3=images.float().mean(dim=(2, 3)))

    init_from_env()
    rank, world = rank_world()
    ext = Means()
    out = source_features(open_images(sys.argv[1]), ext, ('pool3',), batch_size=2, num_workers=0, use_cache=False)
    one = source_features(open_images(sys.argv[1]), ext, ('pool3',), max_items=1, num_workers=0, use_cache=False)
    seen = torch.tensor([ext.seen])
    torch.distributed.all_reduce(seen)
    if rank == 0:
        np.save(sys.argv[2], out['pool3'])
        np.save(sys.argv[2] + '.one.npy', one['pool3'])      # rank 1 had no image at all
        print('world', world, 'per-rank', ext.seen, 'total', int(seen))
''')


def test_torchrun_two_processes_match_single_process(tmp_path, imgtools, torchrun):
    folder = imgtools.write_folder(tmp_path / 'd', imgtools.make_images(5, size=8))   # 5: uneven shards
    (tmp_path / 'run.py').write_text(SCRIPT)
    r = torchrun([tmp_path / 'run.py', folder, tmp_path / 'out.npy'], cwd=tmp_path)
    assert 'world 2 per-rank 4 total 6' in r.stdout                 # 5 + 1 images, each seen once
    dist = np.load(tmp_path / 'out.npy')
    imgs = torch.cat([b for _, b in iter_batches(open_images(folder), range(5), 5, num_workers=0)])
    np.testing.assert_array_equal(dist, imgs.float().mean(dim=(2, 3)).numpy())   # in index order
    np.testing.assert_array_equal(np.load(str(tmp_path / 'out.npy') + '.one.npy'), dist[:1])

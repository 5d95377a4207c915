"""Per-image metrics of a stylized portrait against its (aligned) photo: identity and LPIPS.

Each metric is used when its weights are available (metrics.identity's dlib embedder ships with
face-recognition-models; LPIPS needs torchvision's ImageNet backbone file) and is otherwise
reported as unavailable with the reason, never as a made-up number.
"""

import numpy as np
import torch
import torch.nn.functional as F

from pstyle.metrics.lpips_utils import load_lpips
from pstyle.metrics.identity import build_embedder
from pstyle.metrics.lpips_utils import lpips_distance
from pstyle.metrics.identity import cosine

LPIPS_NET = 'alex'          # The LPIPS paper's default for measuring (the projector's loss uses VGG).
LPIPS_RESOLUTION = 256      # Larger images are area-downsampled first, as the projector does.


class PhotoMetrics:
    def __init__(self, device='cpu', identity_kind='dlib', lpips_net=LPIPS_NET):
        self.device = torch.device(device)
        self.available, self.notes = {}, []
        self.lpips = self.embedder = None
        try:
            self.lpips = load_lpips(lpips_net, device=self.device)
            self.available['lpips'] = dict(net=lpips_net, **self.lpips.pstyle_info)
        except Exception as e:  # noqa: BLE001 -- optional: record why
            self.notes.append(f'LPIPS to the photo not measured: {e}')
        try:
            self.embedder = build_embedder(identity_kind, device=self.device)
            self.available['identity'] = dict(self.embedder.info)
        except Exception as e:  # noqa: BLE001
            self.notes.append(f'identity similarity not measured: {e}')

    @torch.no_grad()
    def __call__(self, photo, images):
        """photo uint8 [H, W, 3]; images uint8 [M, H, W, 3] -> M dicts (lpips, identity: float or None)."""
        photo = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None]  # [1CHW]
        imgs = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)   # [MCHW]
        out = [dict(lpips=None, identity=None) for _ in range(len(imgs))]
        if self.lpips is not None:
            d = self._lpips(photo.expand(len(imgs), -1, -1, -1), imgs)
            for o, v in zip(out, d):
                o['lpips'] = float(v)
        if self.embedder is not None:
            for o, sim in zip(out, self._identity(photo, imgs)):
                o['identity'] = sim
        return out

    def _lpips(self, a, b):
        a, b = a.float() / 127.5 - 1, b.float() / 127.5 - 1
        if a.shape[-1] > LPIPS_RESOLUTION:
            a = F.interpolate(a, size=LPIPS_RESOLUTION, mode='area')
            b = F.interpolate(b, size=LPIPS_RESOLUTION, mode='area')
        return lpips_distance(self.lpips, a.clamp(-1, 1), b.clamp(-1, 1)).cpu()

    def _identity(self, photo, imgs):
        """Cosine similarity of face embeddings; None where no face is found in either image."""
        emb_p, found_p = self.embedder.embed(photo)
        emb, found = self.embedder.embed(imgs)
        return [float(cosine(emb_p[0], e)) if (found_p[0] and f) else None for e, f in zip(emb, found)]

"""Per-image metrics of a stylized portrait against its (aligned) photo: identity and LPIPS.

Each metric is used when its weights are available (metrics.identity's dlib embedder ships with
face-recognition-models; LPIPS needs torchvision's ImageNet backbone file) and is otherwise
reported as unavailable with the reason, never as a made-up number.
"""

import numpy as np
import torch
import torch.nn.functional as F
from pstyle.metrics.identity import ArcFaceEmbedder, build_embedder, pair_identity
from pstyle.metrics.lpips_utils import load_lpips, lpips_distance

LPIPS_NET = 'alex'          # The LPIPS paper's default for measuring (the projector's loss uses VGG).
LPIPS_RESOLUTION = 256      # Larger images are area-downsampled first, as the projector does.


class PhotoMetrics:
    """Per stylized image: `lpips`; `identity_embedder` (the embedder's name, None when unavailable) and its
    numbers, `identity_dlib_distance` + `same_person` (distance < 0.6) for dlib or `identity_arcface_cosine`
    for ArcFace (`arcface_weights`); `identity_note` says why no number was given (no face, not a face)."""

    def __init__(self, device='cpu', identity_kind='dlib', lpips_net=LPIPS_NET, arcface_weights=None):
        self.device = torch.device(device)
        self.available, self.notes = {}, []
        self.lpips = self.embedder = None
        try:
            self.lpips = load_lpips(lpips_net, device=self.device)
            self.available['lpips'] = dict(net=lpips_net, **self.lpips.pstyle_info)
        except Exception as e:  # noqa: BLE001 -- optional: record why
            self.notes.append(f'LPIPS to the photo not measured: {e}')
        try:
            self.embedder = build_embedder(identity_kind, arcface_weights, device=self.device)
            self.available['identity'] = dict(self.embedder.info)
        except Exception as e:  # noqa: BLE001
            self.notes.append(f'identity similarity not measured: {e}')

    @torch.no_grad()
    def __call__(self, photo, images):
        """photo uint8 [H, W, 3]; images uint8 [M, H, W, 3] -> M dicts (see the class docstring)."""
        photo = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None]  # [1CHW]
        imgs = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)   # [MCHW]
        out = [dict(lpips=None) for _ in range(len(imgs))]
        if self.lpips is not None:
            d = self._lpips(photo.expand(len(imgs), -1, -1, -1), imgs)
            for o, v in zip(out, d):
                o['lpips'] = float(v)
        identity = self._identity(photo, imgs) if self.embedder is not None else \
            [dict(identity_embedder=None, identity_note='identity not measured (see notes)')] * len(imgs)
        for o, ident in zip(out, identity):
            o.update(ident)
        return out

    def _lpips(self, a, b):
        a, b = a.float() / 127.5 - 1, b.float() / 127.5 - 1
        if a.shape[-1] > LPIPS_RESOLUTION:
            a = F.interpolate(a, size=LPIPS_RESOLUTION, mode='area')
            b = F.interpolate(b, size=LPIPS_RESOLUTION, mode='area')
        return lpips_distance(self.lpips, a.clamp(-1, 1), b.clamp(-1, 1)).cpu()

    def _identity(self, photo, imgs):
        """The embedder's numbers per image (None where the photo or the image is not a face, with the reason)."""
        name = self.embedder.name
        empty = dict(identity_arcface_cosine=None) if name == ArcFaceEmbedder.name else \
            dict(identity_dlib_distance=None, same_person=None)
        emb_p, (check_p,) = self.embedder.embed_checked(photo)
        emb, checks = self.embedder.embed_checked(imgs)
        out = []
        for e, check in zip(emb, checks):
            entry = dict(identity_embedder=name, **empty, identity_note=None)
            if not check_p.is_face:
                entry['identity_note'] = f'photo: {check_p.describe()}'
            elif not check.is_face:
                entry['identity_note'] = f'output: {check.describe()}'
            else:
                entry.update(pair_identity(name, emb_p[0], e))
            out.append(entry)
        return out

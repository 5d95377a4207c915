"""Training an AdaIN decoder (Huang & Belongie 2017, Sec. 6; naoto0804/pytorch-AdaIN's train.py) on folders
of content and style images, in a resumable run directory.

Layout of `outdir`:

    config.json                 every option of the run (a resume must match it; max_iter may grow)
    log.jsonl                   one line per logged iteration: losses, learning rate, seconds
    snapshot-NNNNNNN.pt         decoder, Adam state and iteration (atomic; tensors only)
    decoder.pth                 the newest decoder as a plain state_dict: `pstyle adain --decoder` loads it

Resume is exact: the images, crops and order of iteration i come from a generator seeded with
(seed, i) alone, so a run stopped after any snapshot and resumed gives bitwise the decoder of a run
that never stopped.
"""

import dataclasses
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pstyle.baselines import adain, runs
from pstyle.baselines.translator_train import check_resume, truncate_log, write_text
from pstyle.projectors.image_io import list_images
from pstyle.torch_utils.errors import InputError
from pstyle.torch_utils.fileio import atomic_torch_save
from pstyle.models.render import pick_device

SNAPSHOT_FORMAT = 'pstyle-adain-train'
SNAPSHOT_VERSION = 1
_SNAPSHOT_RE = re.compile(r'snapshot-(\d{7})\.pt')
STYLE_TAPS = (4, 11, 18, 31)       # net.py: enc_1..enc_4 end at relu1_1, relu2_1, relu3_1, relu4_1


@dataclasses.dataclass
class AdainTrainConfig:
    content_dir: str
    style_dir: str
    vgg: str = 'adain_vgg'             # vgg_normalised.pth (file, URL or short name); frozen
    decoder_init: str = None           # start from a decoder file instead of a seeded random one
    lr: float = 1e-4
    lr_decay: float = 5e-5             # lr / (1 + lr_decay * iteration), as train.py
    max_iter: int = 160000
    batch_size: int = 8
    content_weight: float = 1.0
    style_weight: float = 10.0
    load_size: int = 512               # images resized to load_size x load_size, then a random crop
    crop_size: int = 256
    snapshot_every: int = 10000
    log_every: int = 100
    seed: int = 0

    def check(self):
        if min(self.max_iter, self.batch_size, self.snapshot_every, self.log_every, self.crop_size) < 1:
            raise ValueError('max_iter, batch size, snapshot/log intervals and crop size must be >= 1')
        if self.crop_size > self.load_size:
            raise ValueError(f'crop size {self.crop_size} is larger than load size {self.load_size}')
        if self.crop_size < 16:
            raise ValueError(f'crop size must be >= 16 (the encoder pools 3 times), got {self.crop_size}')
        return self


def content_style_loss(encoder, dec, content, style, alpha=1.0):
    """net.py's Net.forward: (content loss, style loss) of the decoded AdaIN target.

    Content: MSE between the relu4_1 features of the output and the AdaIN target t (Eq. 12); style: MSE of
    the per-channel means and standard deviations at relu1_1 ... relu4_1 (Eq. 13)."""
    def taps(x):
        feats, start = [], 0
        for end in STYLE_TAPS:
            x = encoder[start:end](x)
            feats.append(x)
            start = end
        return feats
    style_feats = taps(style)
    content_feat = encoder(content)
    t = adain.adaptive_instance_normalization(content_feat, style_feats[-1])
    t = alpha * t + (1 - alpha) * content_feat
    out_feats = taps(dec(t))
    loss_c = F.mse_loss(out_feats[-1], t)
    loss_s = 0
    for out_f, style_f in zip(out_feats, style_feats):
        (mo, so), (ms, ss) = adain.calc_mean_std(out_f), adain.calc_mean_std(style_f)
        loss_s = loss_s + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
    return loss_c, loss_s


class Batches:
    """Iteration i -> (content [B,3,c,c], style [B,3,c,c]) in [0,1], drawn from a generator seeded with
    (seed, i): the same batch whatever happened before. An unreadable image is replaced by the next file."""

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.content, self.style = self._list(cfg.content_dir, 'content'), self._list(cfg.style_dir, 'style')
        self.skipped = set()

    @staticmethod
    def _list(folder, what):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f'{what} folder {folder} does not exist')
        files = list_images(folder)
        if not files:
            raise ValueError(f'{what} folder {folder} has no images')
        return files

    def _load(self, files, index, g):
        c, size = self.cfg.crop_size, self.cfg.load_size
        top, left = (int(v) for v in torch.randint(0, size - c + 1, (2,), generator=g))
        for k in range(len(files)):
            path = files[(index + k) % len(files)]
            try:
                img = runs.read_image(path).resize((size, size), Image.BILINEAR)  # train.py: Resize((512, 512))
                return runs.to_tensor(img.crop((left, top, left + c, top + c)), self.device)
            except InputError:  # An unreadable training image is skipped and reported.
                self.skipped.add(str(path))
        raise ValueError(f'no readable image among the {len(files)} files of {files[0].parent}')

    def __call__(self, iteration):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + iteration)
        B = self.cfg.batch_size
        ci = torch.randint(0, len(self.content), (B,), generator=g).tolist()
        si = torch.randint(0, len(self.style), (B,), generator=g).tolist()
        content = torch.cat([self._load(self.content, i, g) for i in ci])
        style = torch.cat([self._load(self.style, i, g) for i in si])
        return content, style


def _new_decoder(cfg):
    if cfg.decoder_init is not None:
        return adain.load_decoder(cfg.decoder_init)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return adain.decoder()                        # PyTorch's default init, as train.py


def latest_snapshot(run_dir):
    found = sorted(int(m.group(1)) for p in Path(run_dir).glob('snapshot-*.pt')
                   if (m := _SNAPSHOT_RE.fullmatch(p.name)))
    return (Path(run_dir) / f'snapshot-{found[-1]:07d}.pt') if found else None


def save_snapshot(run_dir, iteration, dec, optimizer):
    path = run_dir / f'snapshot-{iteration:07d}.pt'
    state = dict(format=SNAPSHOT_FORMAT, version=SNAPSHOT_VERSION, iteration=iteration,
                 decoder=dec.state_dict(), optimizer=optimizer.state_dict())
    atomic_torch_save(state, path)
    atomic_torch_save({k: v.detach().cpu() for k, v in dec.state_dict().items()}, run_dir / 'decoder.pth')
    return path


def adain_train(cfg, outdir, device=None, log=print, fault_hook=None):
    """Train (or resume) a decoder in `outdir`; returns {'iteration', 'decoder', 'resumed_from', 'skipped'}.

    fault_hook(iteration) is called after each iteration (tests raise from it to simulate a crash)."""
    cfg.check()
    device = pick_device(device)
    run_dir = Path(outdir)
    run_dir.mkdir(parents=True, exist_ok=True)
    encoder = adain.load_encoder(cfg.vgg)[0].to(device)
    batches = Batches(cfg, device)
    dec = _new_decoder(cfg).to(device).train()
    optimizer = torch.optim.Adam(dec.parameters(), lr=cfg.lr)
    start, snapshot = 0, latest_snapshot(run_dir)
    if snapshot is not None:
        check_resume(run_dir, dataclasses.asdict(cfg), resumable=('max_iter',))
        state = torch.load(snapshot, map_location=device, weights_only=True)
        dec.load_state_dict(state['decoder'])
        optimizer.load_state_dict(state['optimizer'])
        start = int(state['iteration'])
        truncate_log(run_dir, start)
        log(f'resuming {run_dir} from iteration {start} ({snapshot.name})')
    write_text(run_dir / 'config.json', json.dumps(dataclasses.asdict(cfg), indent=1) + '\n')
    t0 = time.perf_counter()
    for it in range(start, cfg.max_iter):
        for group in optimizer.param_groups:
            group['lr'] = cfg.lr / (1.0 + cfg.lr_decay * it)
        content, style = batches(it)
        loss_c, loss_s = content_style_loss(encoder, dec, content, style)
        loss = cfg.content_weight * loss_c + cfg.style_weight * loss_s
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.max_iter:
            entry = dict(iteration=done, loss_content=float(loss_c.detach()), loss_style=float(loss_s.detach()),
                         lr=optimizer.param_groups[0]['lr'], seconds=time.perf_counter() - t0)
            with open(run_dir / 'log.jsonl', 'a') as f:
                f.write(json.dumps(entry) + '\n')
            log(f'iteration {done}: content {entry["loss_content"]:.4f}, style {entry["loss_style"]:.4f}')
        if done % cfg.snapshot_every == 0 or done == cfg.max_iter:
            save_snapshot(run_dir, done, dec, optimizer)
        if fault_hook is not None:
            fault_hook(done)
    return dict(iteration=max(start, cfg.max_iter), decoder=str(run_dir / 'decoder.pth'),
                resumed_from=start or None, skipped=sorted(batches.skipped))

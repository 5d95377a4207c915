"""`pstyle compare`: the StyleGAN methods and the classic baselines on the same photos, side by side.

The photos are aligned once (or taken as they are with align=False); then each requested method runs
through its own command's folder function on that one set, into `<outdir>/<method>/` with that command's
layout and manifest: `stylize.pipeline.stylize_photos` for `stylegan-swap` (base + styled, per-row spec) and
`fewshot` (base + a `pstyle fewshot` delta), `nst_folder`, `adain_folder`, `cyclegan_folder`, and the
distilled network (a CycleGAN-style ResnetGenerator checkpoint) through `load_cyclegan` + `translate`.
A photo that fails in one method is recorded in that method's manifest and the rest go on; `resume`
passes on to every folder run. `baselines/compare_report.py` then writes the figure and the table.
"""

import dataclasses
import time
from pathlib import Path

from pstyle.baselines import compare_report, runs
from pstyle.baselines.adain import AdainOptions, adain_folder, load_adain
from pstyle.baselines.cyclegan import CycleganOptions, cyclegan_folder, load_cyclegan, translate_one
from pstyle.baselines.nst import NSTOptions, nst_folder
from pstyle.baselines.vgg import load_vgg19
from pstyle.models import deltas
from pstyle.models.render import compute_dtype, pick_device
from pstyle.projectors.align import align_folder
from pstyle.stylize import files, layer_weights
from pstyle.stylize.pipeline import StylizeConfig, stylize_photos
from pstyle.torch_utils.folder_run import plan

METHODS = ('stylegan-swap', 'fewshot', 'nst', 'adain', 'cyclegan', 'distilled')

# method -> [(config field, the option that gives it)]: a method whose inputs are missing is refused before any work.
NEEDS = {
    'stylegan-swap': [('base', '--base'), ('styled', '--styled')],
    'fewshot':       [('base', '--base'), ('fewshot_delta', '--fewshot-delta')],
    'nst':           [('styles', '--style')],
    'adain':         [('styles', '--style')],
    'cyclegan':      [('cyclegan', '--cyclegan')],
    'distilled':     [('distilled', '--distilled')],
}


@dataclasses.dataclass
class CompareConfig:
    methods:              tuple = ()
    align:                bool = True       # FFHQ-align once for all methods; False: the photos are aligned squares.
    size:                 int = None        # Aligned photo size; None = the base network's resolution (else 512).
    landmarks:            str = None        # dlib 68-point model for the alignment.
    # StyleGAN methods (the `pstyle stylize` pipeline).
    base:                 str = None
    styled:               str = None
    spec:                 layer_weights.WeightSpec = dataclasses.field(default_factory=layer_weights.make_spec)
    mapping:              str = 'from-a'
    fewshot_delta:        str = None        # style.safetensors from `pstyle fewshot` (a delta of --base).
    delta_alpha:          float = 1.0
    project_preset:       str = 'default'
    project_steps:        int = None        # Projection steps (None: the preset's).
    project_lpips_weight: float = None      # 0 = no LPIPS/VGG16 in the projection (offline).
    project_mse_weight:   float = None
    batch_size:           int = 4
    precision:            str = 'fp32'      # Every method's network passes: the projection's (StyleGAN methods), autocast
                                            # (nst: VGG passes; adain, cyclegan, distilled: the networks); fp16 on CUDA only.
    # Classic methods.
    styles:               tuple = ()        # Style images of nst and adain.
    nst_steps:            int = 500
    nst_size:             int = 0           # Longest side; 0 = the (aligned) photo's size.
    nst_vgg_weights:      str = None        # torchvision vgg19-dcbb9e9d.pth (None: found or downloaded).
    adain_vgg:            str = 'adain_vgg'
    adain_decoder:        str = 'adain_decoder'
    adain_alpha:          float = 1.0
    adain_style_size:     int = 512         # Shorter side of the style images; 0 keeps their size.
    cyclegan:             str = None        # latest_net_G.pth, URL or short name (style_monet, ...).
    distilled:            str = None        # The distilled network: a ResnetGenerator checkpoint.
    # The table.
    style_set:            str = None        # Folder (or zip) of style images for KID/FID.
    inception_weights:    str = None
    protocol:             str = 'legacy_tf'
    kid_subsets:          int = 100
    kid_subset_size:      int = None        # None: min(1000, outputs, style set).
    identity_model:       str = 'dlib'
    arcface_weights:      str = None
    seed:                 int = 2020        # KID subsets.
    device:               str = None

    def as_dict(self):
        out = dataclasses.asdict(self)
        out['spec'] = self.spec.as_dict()
        return out

    def check(self):
        """Unknown methods and missing inputs: one error naming the options, before any work."""
        if not self.methods:
            raise ValueError(f'no methods given: --methods takes a comma-separated list of {", ".join(METHODS)}')
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f'unknown method(s) {", ".join(unknown)}: choose from {", ".join(METHODS)}')
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f'--methods names a method twice: {", ".join(self.methods)}')
        missing = [f'{m} needs {option}' for m in self.methods for field, option in NEEDS[m] if not getattr(self, field)]
        if missing:
            raise ValueError('missing inputs: ' + '; '.join(missing))
        if self.precision == 'fp16' and 'nst' in self.methods:
            raise ValueError('nst has no fp16 path (fp32 or bf16 only): use --precision bf16 or fp32, or leave nst out '
                             'of --methods')
        return self


# ----------------------------------------------------------------------------
# Methods: each runs its command's folder function on the photos into its own folder.

@dataclasses.dataclass
class Prepared:
    """What the methods share, loaded before any photo is processed (so a bad weight file stops the run first)."""
    device: object
    resolution: int = None                  # The base network's, when a StyleGAN method runs.
    vgg19: object = None                    # nst's VGG19.
    weights: dict = dataclasses.field(default_factory=dict)   # method -> provenance of its weight files


def prepare(cfg):
    """Load or resolve every requested method's weights (errors name the file); returns Prepared."""
    out = Prepared(pick_device(cfg.device))
    compute_dtype(cfg.precision, out.device)  # fp16 off CUDA is refused here, before any weights are read
    methods = set(cfg.methods)
    if methods & {'stylegan-swap', 'fewshot'}:
        G, info = files.load_generator(cfg.base, out.device)
        out.resolution, out.weights['base'] = int(G.img_resolution), info
        if 'stylegan-swap' in methods:
            out.weights['stylegan-swap'] = files.load_generator(cfg.styled, 'cpu')[1]
        if 'fewshot' in methods:
            deltas.load_tuned_generator(G, cfg.fewshot_delta, cfg.delta_alpha)  # Refuses a delta of another network.
            out.weights['fewshot'] = runs.file_info(cfg.fewshot_delta)
    if 'nst' in methods:
        out.vgg19 = load_vgg19(cfg.nst_vgg_weights, device=out.device)
        out.weights['nst'] = runs.file_info(out.vgg19.weights_path)
    if 'adain' in methods:
        out.weights['adain'] = load_adain(cfg.adain_vgg, cfg.adain_decoder)[2]
    for method in ('cyclegan', 'distilled'):
        if method in methods:
            out.weights[method] = load_cyclegan(getattr(cfg, method))[1]
    for style in cfg.styles:
        runs.read_image(style)  # A bad style image stops the run here, naming the file.
    return out


def _stylize_config(cfg, prepared, **model):
    project = dict(num_steps=cfg.project_steps, lpips_weight=cfg.project_lpips_weight, mse_weight=cfg.project_mse_weight,
                   precision=cfg.precision)
    return StylizeConfig(base=cfg.base, mapping=cfg.mapping, align=False, project_preset=cfg.project_preset,
                         project={k: v for k, v in project.items() if v is not None}, batch_size=cfg.batch_size,
                         metrics=False, device=str(prepared.device), **model)  # compare measures every method alike


def run_stylegan_swap(cfg, photos, outdir, prepared, log, resume):
    scfg = _stylize_config(cfg, prepared, styled=cfg.styled, spec=cfg.spec)
    return stylize_photos(photos, outdir, scfg, log=log, resume=resume)


def run_fewshot(cfg, photos, outdir, prepared, log, resume):
    # As `pstyle stylize --styled-delta`: the whole tuned network (preset `all`).
    scfg = _stylize_config(cfg, prepared, styled_delta=cfg.fewshot_delta, delta_alpha=cfg.delta_alpha,
                           spec=layer_weights.make_spec(preset='all'))
    return stylize_photos(photos, outdir, scfg, log=log, resume=resume)


def run_nst(cfg, photos, outdir, prepared, log, resume):
    opts = NSTOptions(steps=cfg.nst_steps, size=cfg.nst_size, batch_size=cfg.batch_size, precision=cfg.precision,
                      device=str(prepared.device))
    return nst_folder(photos, list(cfg.styles), outdir, opts, vgg=prepared.vgg19, log=log, resume=resume)


def run_adain(cfg, photos, outdir, prepared, log, resume):
    opts = AdainOptions(alpha=cfg.adain_alpha, content_size=0, style_size=cfg.adain_style_size, precision=cfg.precision,
                        device=str(prepared.device))
    return adain_folder(photos, list(cfg.styles), outdir, cfg.adain_vgg, cfg.adain_decoder, opts, log=log, resume=resume)


def run_cyclegan(cfg, photos, outdir, prepared, log, resume):
    opts = CycleganOptions(precision=cfg.precision, device=str(prepared.device))
    return cyclegan_folder(cfg.cyclegan, photos, outdir, opts, log=log, resume=resume)


def run_distilled(cfg, photos, outdir, prepared, log, resume):
    """The distilled feed-forward network, loaded and run exactly as a CycleGAN generator (one pass per photo)."""
    device, dtype = prepared.device, compute_dtype(cfg.precision, prepared.device)
    G, weights = load_cyclegan(cfg.distilled, device)
    options = dict(size=0, precision=cfg.precision, device=str(device))
    run = runs.start_run(plan(photos), outdir, 'distilled', dict(input=str(photos), checkpoint=weights), options, log, resume)
    t0 = time.perf_counter()
    for item in run.pending():
        runs.run_photo(run, item, lambda: [(f'{item.name}.png', translate_one(G, runs.read_image(item.source), device, dtype))])
    options['total_seconds'] = time.perf_counter() - t0
    return run.save()


RUNNERS = {'stylegan-swap': run_stylegan_swap, 'fewshot': run_fewshot, 'nst': run_nst, 'adain': run_adain,
           'cyclegan': run_cyclegan, 'distilled': run_distilled}


# ----------------------------------------------------------------------------
# The comparison.

def aligned_photos(photos, outdir, cfg, prepared, log, resume):
    """(the methods' input, alignment manifest or None): `<outdir>/photos/` aligned once, or the photos as given."""
    if not cfg.align:
        return photos, None
    size = cfg.size or prepared.resolution or 512
    manifest = align_folder(photos, Path(outdir) / 'photos', size=size, log=log, resume=resume,
                            **({'predictor': cfg.landmarks} if cfg.landmarks else {}))
    if manifest['num_ok'] == 0:
        raise ValueError('no photo could be aligned: ' + '; '.join(f'{f["input"]}: {f["error"]}' for f in manifest['failures']))
    return Path(outdir) / 'photos', manifest


def compare(photos, outdir, cfg, log=print, resume=False):
    """Run every method of `cfg` on the same photos into `<outdir>/<method>/`, then write compare.png and
    compare.md/.csv/.json (see compare_report). Returns the record (the JSON's content)."""
    cfg.check()
    outdir = Path(outdir)
    prepared = prepare(cfg)
    inputs, alignment = aligned_photos(photos, outdir, cfg, prepared, log, resume)
    manifests, wall = {}, {}
    for method in cfg.methods:
        log(f'{method}: running')
        t0 = time.perf_counter()
        manifests[method] = RUNNERS[method](cfg, inputs, outdir / method, prepared, log, resume)
        wall[method] = time.perf_counter() - t0
    return compare_report.write_report(inputs, outdir, cfg, manifests, wall, prepared, alignment)

"""Server settings, the named styles it serves, network licences and the bind rule."""

import dataclasses
import ipaddress
import json
import os
from pathlib import Path

from pstyle.stylize import blend, layer_weights
from pstyle.models import checkpoint, demo

API_KEY_ENV = 'PSTYLE_API_KEY'
# The encoder of the `demo` network (models/demo.py): `pstyle serve` without network options inverts with it.
DEMO_ENCODER = 'demo-encoder'
# Without --base/--config: the shipped demo networks (models/demo.py), projected with the pixel loss only
# (no LPIPS weights offline) unless --lpips-weight/--mse-weight say otherwise.
DEFAULT_STYLES = {'demo-toon': dict(base='demo', styled='demo-toon', encoder=DEMO_ENCODER)}
DEMO_PROJECTION = dict(lpips_weight=0.0, mse_weight=1.0)
NO_NETWORK_HELP = 'no network to serve: give --base NET (and --styled NET) or --config styles.json'
INVERT_MODES = ('encoder', 'optimize', 'encoder+optimize')  # projectors.invert.INVERSIONS, in the page's order.

# Licences keyed off the short name or URL. NVIDIA's FFHQ/MetFaces/AFHQ weights are released under the
# NVIDIA's licence for its FFHQ/MetFaces/AFHQ networks (Source Code License-NC): research and evaluation only.
NVIDIA_NC = "NVIDIA's Source Code License-NC (non-commercial: research and evaluation only)"
_NVIDIA_HOSTS = ('nvlabs-fi-cdn.nvidia.com', 'api.ngc.nvidia.com')


DEMO_LICENCE = ('MIT, as this project: trained here on procedurally drawn portraits (models/demo.py); '
                'no third-party weights or images')


def licence_of(network):
    """A licence line for a network given as a short name, URL or file."""
    text = str(network)
    if demo.is_demo_name(text) or demo.is_demo_encoder_name(text):
        return DEMO_LICENCE
    if text in checkpoint.PRETRAINED or any(host in text for host in _NVIDIA_HOSTS):
        return NVIDIA_NC
    if os.path.basename(text).split('.')[0].lower() in ('ffhq', 'metfaces') or 'stylegan2-ffhq' in text \
            or 'stylegan2-metfaces' in text:
        return NVIDIA_NC + ' [guessed from the file name]'
    return 'unknown: a local file; check where its weights come from'


@dataclasses.dataclass
class StyleConfig:
    """One named style: a base generator (A, the projection space) and optionally a fine-tune B."""
    name:       str
    base:       str                     # File, URL or short name.
    styled:     str = None              # None: the base alone (reconstructions, plain generation).
    mapping:    str = 'from-a'          # Mapping network and w_avg of the blended generator.
    spec:       dict = dataclasses.field(default_factory=dict)  # Default per-row spec (make_spec keywords).
    encoder:    str = None              # Encoder of the base (file, URL or short name): invert=encoder.

    @property
    def default_invert(self):
        """A request's inversion when it names none: the encoder's when one is configured."""
        return 'encoder' if self.encoder else 'optimize'

    def check(self):
        if self.mapping not in blend.MAPPING_MODES:
            raise ValueError(f'style {self.name!r}: mapping must be one of {", ".join(blend.MAPPING_MODES)}, '
                             f'got {self.mapping!r}')
        self.default_spec()
        return self

    def default_spec(self):
        try:
            return layer_weights.make_spec(**self.spec)
        except TypeError as e:
            raise ValueError(f'style {self.name!r}: bad spec {self.spec} ({e})') from None


@dataclasses.dataclass
class ServeConfig:
    styles:         list                    # [StyleConfig]; the first is the default style.
    host:           str = '127.0.0.1'
    port:           int = 8000
    max_batch:      int = 8                 # Images per generator pass.
    max_wait_ms:    float = 10.0            # How long a batch waits for company.
    queue_size:     int = 64                # Requests waiting; more get 503 + Retry-After.
    pad_batch:      bool = True             # Every pass at max_batch images: bit-identical to serving alone.
    timeout_s:      float = 120.0           # Per request, queueing included (504 after).
    max_upload_mb:  float = 10.0
    max_pixels:     int = 40_000_000
    max_seeds:      int = 64                # Seeds per /v1/generate request.
    api_key:        str = None
    cors_origins:   tuple = ()
    project_preset: str = 'default'         # Projection defaults (projectors.projector.PRESETS).
    steps:          int = None              # Default projection steps (None = the preset's).
    max_steps:      int = 1000              # Upper bound of the per-request `steps`.
    lpips_weight:   float = None
    mse_weight:     float = None
    precision:      str = None
    landmarks:      str = None
    device:         str = 'auto'

    def check(self):
        if not self.styles:
            raise ValueError(NO_NETWORK_HELP)
        names = [s.name for s in self.styles]
        if len(set(names)) != len(names):
            raise ValueError(f'style names must be unique, got {names}')
        for style in self.styles:
            style.check()
        for name in ('max_batch', 'queue_size', 'max_steps', 'max_seeds', 'max_pixels'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.max_wait_ms < 0 or self.timeout_s <= 0 or self.max_upload_mb <= 0:
            raise ValueError('max_wait_ms must be >= 0, timeout_s and max_upload_mb > 0')
        if self.steps is not None and not 1 <= self.steps <= self.max_steps:
            raise ValueError(f'--steps {self.steps} must be in [1, --max-steps {self.max_steps}]')
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f'binding {self.host} (not a loopback address) needs an API key: '
                             f'--api-key or ${API_KEY_ENV}')
        return self

    def project_overrides(self, steps=None):
        """ProjectConfig overrides from the server defaults and a request's steps."""
        out = dict(num_steps=steps if steps is not None else self.steps, lpips_weight=self.lpips_weight,
                   mse_weight=self.mse_weight, precision=self.precision)
        return {k: v for k, v in out.items() if v is not None}


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_styles_file(path):
    """styles.json -> [StyleConfig]. Format: {"styles": {"toon": {"base": ..., "styled": ..., "mapping": ...,
    "spec": {"preset": "fine"}, "encoder": ...}, ...}, "default": "toon"}; the default style is listed first.
    A style's `encoder` inverts its photos by default (`invert=encoder`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path}: cannot read the styles file ({e})') from None
    styles = data.get('styles') if isinstance(data, dict) else None
    if not isinstance(styles, dict) or not styles:
        raise ValueError(f'{path}: expected {{"styles": {{"NAME": {{"base": ..., "styled": ...}}, ...}}}}')
    known = {f.name for f in dataclasses.fields(StyleConfig)} - {'name'}
    out = []
    for name, entry in styles.items():
        if not isinstance(entry, dict) or 'base' not in entry:
            raise ValueError(f'{path}: style {name!r} needs at least "base"')
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f'{path}: style {name!r} has unknown keys {unknown} (known: {sorted(known)})')
        out.append(StyleConfig(name=str(name), **entry))
    default = data.get('default', out[0].name)
    if default not in styles:
        raise ValueError(f'{path}: default style {default!r} is not one of {list(styles)}')
    return sorted(out, key=lambda s: s.name != default)


def is_default(base=None, config=None):
    """Whether make_styles falls back to DEFAULT_STYLES (no --base, no --config)."""
    return base is None and config is None and bool(DEFAULT_STYLES)


def make_styles(base=None, styled=None, config=None, mapping='from-a', name='default', encoder=None):
    """Styles from --config, or one from --base/--styled, or DEFAULT_STYLES; a clear error without any.
    `encoder` (--encoder) is the encoder of --base, or of the default styles' base."""
    if config is not None:
        if base is not None or styled is not None:
            raise ValueError('give either --config or --base/--styled, not both')
        if encoder is not None:
            raise ValueError('with --config, name each style\'s encoder in the styles file ("encoder": ...), '
                             'not with --encoder')
        return load_styles_file(config)
    if base is not None:
        return [StyleConfig(name=name, base=base, styled=styled, mapping=mapping, encoder=encoder)]
    if styled is not None:
        raise ValueError('--styled needs --base (the network it was fine-tuned from)')
    if DEFAULT_STYLES:
        return [StyleConfig(name=k, **dict(v, encoder=encoder or v.get('encoder'))) for k, v in DEFAULT_STYLES.items()]
    raise ValueError(NO_NETWORK_HELP)

"""Just-in-time build of the CUDA (and C++ CPU) plugins with ninja (`torch.utils.cpp_extension.load`).

A plugin is built the first time a tensor it handles (CUDA; CPU for the C++ ones) reaches an op that wants it -- never at import --
into a cache folder named after a hash of its sources, the flags and the torch/CUDA/Python versions,
so rebuilding happens only when something changed. When the build fails for any reason, one warning
says why and how to fix it, and `get_plugin` returns None: the ops then run their pure-PyTorch `ref`
path, which computes the same results.

Environment: `PSTYLE_CACHE_DIR` (cache root), `PSTYLE_VERBOSE_BUILD=1` (show compiler output).
"""

import hashlib
import os
import re
import sys
import threading
import warnings
from pathlib import Path

_plugins = {}            # module_name -> loaded module, or None after a failed build.
_warned_reasons = set()  # One warning per distinct failure (e.g. a missing nvcc fails every plugin alike).
_lock = threading.Lock()

CXX_FLAGS = ['-O3']
CUDA_FLAGS = ['-O3']


class PluginBuildWarning(UserWarning):
    """A CUDA or C++ plugin could not be built; the slower reference ops are used instead."""


def cache_root():
    """`$PSTYLE_CACHE_DIR/torch_extensions`, else `~/.cache/portrait-stylegan/torch_extensions`."""
    env = os.environ.get('PSTYLE_CACHE_DIR')
    if env:
        return Path(env).expanduser() / 'torch_extensions'
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'portrait-stylegan' / 'torch_extensions'


def source_hash(files, extra=''):
    """16 hex digits over the names and bytes of `files` plus `extra` (versions, flags)."""
    digest = hashlib.sha256()
    for path in files:
        path = Path(path)
        digest.update(path.name.encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def build_dir_for(module_name, sources, headers=(), cflags=()):
    """Cache folder of one plugin version: `<cache_root>/<module_name>-<hash>`."""
    import torch  # Local: keep this module importable cheaply.
    extra = '|'.join([torch.__version__, str(torch.version.cuda), sys.version.split()[0], sys.platform,
                      ' '.join(CXX_FLAGS + list(cflags)), ' '.join(CUDA_FLAGS)])
    return cache_root() / f'{module_name}-{source_hash(list(sources) + list(headers), extra)}'


def get_plugin(module_name, sources, headers=(), cflags=()):
    """The compiled extension `module_name`, building it on first call; None (after one warning) if that fails.

    sources: .cpp/.cu paths compiled into the module; headers: files they include (hashed, not compiled);
    cflags: extra C++ flags of this plugin (hashed too).
    """
    with _lock:
        if module_name in _plugins:
            return _plugins[module_name]
        try:
            module = _build(module_name, [str(s) for s in sources], [str(h) for h in headers], list(cflags))
        except Exception as error:  # noqa: BLE001 -- any failure (no nvcc, no ninja, compiler error) means fallback.
            _warn_build_failure(module_name, error, sources, headers, cflags)
            module = None
        _plugins[module_name] = module
        return module


def _build(module_name, sources, headers, cflags=()):
    from torch.utils import cpp_extension
    verbose = os.environ.get('PSTYLE_VERBOSE_BUILD', '') not in ('', '0')
    build_dir = build_dir_for(module_name, sources, headers, cflags)
    build_dir.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=module_name, sources=sources, build_directory=str(build_dir), verbose=verbose,
        extra_cflags=CXX_FLAGS + list(cflags), extra_cuda_cflags=CUDA_FLAGS, extra_include_paths=[str(Path(sources[0]).parent)],
    )


def _summarize(error, limit=300):
    """One line: the error's head (without the compile command) plus the compiler's first 'error:' line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head = lines[0]
    if head.startswith('Error building extension'):
        head = head.split(':', 1)[0]  # "Error building extension 'name'"; the command line follows.
    first_error = next((line for line in lines[1:] if re.search(r'\berror\b', line, re.IGNORECASE)
                        and not line.startswith(('FAILED', 'ninja:'))), None)
    text = head[:limit] + (f' -- {first_error[:limit]}' if first_error else '')
    return f'{type(error).__name__}: {text}'


def _warn_build_failure(module_name, error, sources, headers, cflags=()):
    reason = _summarize(error)
    log_hint = ''
    try:
        build_dir = build_dir_for(module_name, sources, headers, cflags)
        if build_dir.is_dir():
            (build_dir / 'build_error.log').write_text(str(error))
            log_hint = f' Full output: {build_dir / "build_error.log"}.'
    except OSError:
        pass  # The warning matters more than the log file.
    if reason in _warned_reasons:
        return
    _warned_reasons.add(reason)
    import torch
    if not any(str(s).endswith('.cu') for s in sources):     # A CPU plugin (C++ only).
        warnings.warn(
            f"portrait-stylegan: could not build the C++ plugin '{module_name}' ({reason}); using PyTorch's own "
            f"ops instead (same results, slower). To fix: install a C++ compiler and ninja (`pip install ninja`); "
            f"PSTYLE_VERBOSE_BUILD=1 shows the compiler output.{log_hint} Set PSTYLE_OPS_REF=1 to skip the "
            f"plugins and this warning.", PluginBuildWarning, stacklevel=5)
        return
    warnings.warn(
        f"portrait-stylegan: could not build the CUDA plugin '{module_name}' ({reason}); using the slower "
        f"pure-PyTorch reference ops instead (same results). To fix: install the CUDA toolkit matching "
        f"torch.version.cuda={torch.version.cuda} (nvcc on PATH, or CUDA_HOME set), a C++ compiler and ninja "
        f"(`pip install ninja`); PSTYLE_VERBOSE_BUILD=1 shows the compiler output.{log_hint} "
        f"Set PSTYLE_OPS_REF=1 to skip the CUDA plugins and this warning.",
        PluginBuildWarning, stacklevel=5)


def reset():
    """Forget built and failed plugins and past warnings (tests; a changed environment)."""
    with _lock:
        _plugins.clear()
        _warned_reasons.clear()

"""The CUDA plugins' build machinery: sources compile with this machine's nvcc (no GPU needed), the
plugins build and load through custom_ops, the build cache, the `ref` fallback and its one warning."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch

from pstyle.torch_utils import custom_ops
from pstyle.torch_utils.ops import _impl, bias_act, upfirdn2d

REPO = Path(__file__).resolve().parents[2]
OPS_DIR = REPO / 'torch_utils' / 'ops'
CUDA_SOURCES = sorted(OPS_DIR.glob('*.cu'))
CPP_SOURCES = sorted(OPS_DIR.glob('*.cpp'))


def _find_nvcc():
    for candidate in [shutil.which('nvcc'), os.path.join(os.environ.get('CUDA_HOME', '/nonexistent'), 'bin', 'nvcc'),
                      '/usr/local/cuda/bin/nvcc']:
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _find_cuda_home(nvcc):
    """Toolkit root holding include/cuda_runtime.h (nvcc may be a wrapper script outside it)."""
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH'), str(Path(nvcc).resolve().parents[1])]
    dryrun = subprocess.run([nvcc, '-dryrun', '-c', '-x', 'cu', os.devnull], capture_output=True, text=True)
    candidates += [m.group(1) + '/..' for m in re.finditer(r'TOP=(\S+)', dryrun.stdout + dryrun.stderr)]
    candidates.append('/usr/local/cuda')
    for root in filter(None, candidates):
        if (Path(root) / 'include' / 'cuda_runtime.h').is_file():
            return str(Path(root).resolve())
    return None


NVCC = _find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason='nvcc not found (install the CUDA toolkit to run this test)')


def _cxx_std():
    """The C++ standard torch builds extensions with (C++20 since torch's headers use <=>, else C++17)."""
    from torch.utils import cpp_extension
    return '-std=c++20' if '-std=c++20' in Path(cpp_extension.__file__).read_text() else '-std=c++17'


def _common_defines(name):
    abi = int(getattr(torch._C, '_GLIBCXX_USE_CXX11_ABI', 1))
    return [f'-DTORCH_EXTENSION_NAME={name}', '-DTORCH_API_INCLUDE_EXTENSION_H', f'-D_GLIBCXX_USE_CXX11_ABI={abi}']


# --------------------------------------------------------------------------------------------------
# Compilation with the machine's toolchain, no GPU needed.

@pytest.mark.slow
@needs_nvcc
def test_sources_compile_with_nvcc_and_host_compiler(tmp_path):
    """nvcc -c each .cu, and the host compiler -c each .cpp, with torch's headers and flags."""
    from torch.utils import cpp_extension
    torch_includes = [f'-I{p}' for p in cpp_extension.include_paths()]
    std = _cxx_std()
    nvcc_flags = list(getattr(cpp_extension, 'COMMON_NVCC_FLAGS', []))
    arch = '-arch=sm_80'  # One architecture keeps it quick; sm_80 is supported by CUDA 11.0 through 13.
    cxx = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
    assert cxx, 'nvcc is installed but no host C++ compiler (c++/g++) was found'
    jobs = []
    for src in CUDA_SOURCES:
        cmd = [NVCC, '-c', str(src), '-o', str(tmp_path / (src.stem + '_cu.o')), std, arch, '-Xcompiler', '-fPIC',
               *nvcc_flags, *torch_includes, *_common_defines('pstyle_test')]
        jobs.append((src, cmd))
    python_include = f"-I{sysconfig.get_paths()['include']}"
    for src in CPP_SOURCES:
        cmd = [cxx, '-c', str(src), '-o', str(tmp_path / (src.stem + '_cpp.o')), std, '-fPIC', '-O1',
               *torch_includes, python_include, *_common_defines('pstyle_test')]
        jobs.append((src, cmd))
    assert {s.name for s, _ in jobs} >= {'bias_act.cu', 'upfirdn2d.cu', 'bias_act.cpp', 'upfirdn2d.cpp'}
    procs = [(src, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for src, cmd in jobs]
    failures = []
    for src, proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failures.append(f'{src.name}:\n{out[-3000:]}')
    assert not failures, '\n\n'.join(failures)
    assert all((tmp_path / f'{s.stem}_cu.o').stat().st_size > 0 for s in CUDA_SOURCES)


@pytest.mark.slow
@needs_nvcc
def test_plugins_build_load_and_check_arguments(tmp_path):
    """custom_ops builds both plugins into the hashed cache and they import; without a GPU their
    argument checks still run (a CPU tensor is refused with a clear message)."""
    cuda_home = _find_cuda_home(NVCC)
    if cuda_home is None:
        pytest.skip(f'nvcc at {NVCC} but no CUDA toolkit root with include/cuda_runtime.h; set CUDA_HOME')
    if shutil.which('ninja') is None and not Path(sys.executable).with_name('ninja').exists():
        pytest.skip('ninja not found (pip install ninja)')
    script = textwrap.dedent('''
        import warnings, torch
        warnings.simplefilter('error', UserWarning)
        from pstyle.torch_utils import custom_ops
        from pstyle.torch_utils.ops import _impl
        for name, fn in [('bias_act', 'bias_act'), ('upfirdn2d', 'upfirdn2d')]:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # torch warns that no CUDA runtime/GPU is present.
                plugin = _impl.get_plugin(name)
            assert plugin is not None, name
            assert callable(getattr(plugin, fn))
            assert str(custom_ops.cache_root()) in plugin.__file__, plugin.__file__
            x = torch.zeros(2, 3, 4, 4)
            try:
                if name == 'bias_act':
                    plugin.bias_act(x, x.new_empty([0]), x.new_empty([0]), 1, 3, 0, 0.2, 1.0, -1.0)
                else:
                    plugin.upfirdn2d(x, torch.ones(2, 2), 2, 2, 1, 1, 1, 0, 1, 0, False, 1.0)
            except RuntimeError as error:
                assert 'must be a CUDA tensor' in str(error), error
            else:
                raise AssertionError('CPU tensor accepted')
        print('PLUGINS_OK')
    ''')
    env = dict(os.environ, PSTYLE_CACHE_DIR=str(tmp_path), CUDA_HOME=cuda_home, TORCH_CUDA_ARCH_LIST='8.0',
               PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}')
    env.pop('PSTYLE_OPS_REF', None)
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0 and 'PLUGINS_OK' in result.stdout, result.stdout[-3000:] + result.stderr[-5000:]
    built = sorted(p.name for p in (tmp_path / 'torch_extensions').iterdir())
    assert len(built) == 2 and all(re.fullmatch(r'pstyle_(bias_act|upfirdn2d)_plugin-[0-9a-f]{16}', b) for b in built)


# --------------------------------------------------------------------------------------------------
# Cache location and hashing.

def test_cache_root_and_hash(tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path / 'c'))
    assert custom_ops.cache_root() == tmp_path / 'c' / 'torch_extensions'
    monkeypatch.delenv('PSTYLE_CACHE_DIR')
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    assert custom_ops.cache_root() == Path.home() / '.cache' / 'portrait-stylegan' / 'torch_extensions'
    src = tmp_path / 'op.cu'
    src.write_text('// v1\n')
    first = custom_ops.build_dir_for('pstyle_x', [src])
    assert re.fullmatch(r'pstyle_x-[0-9a-f]{16}', first.name)
    assert custom_ops.build_dir_for('pstyle_x', [src]) == first  # Stable.
    src.write_text('// v2\n')
    assert custom_ops.build_dir_for('pstyle_x', [src]) != first  # Any source edit rebuilds.


# --------------------------------------------------------------------------------------------------
# Choosing the implementation.

FAKE_CUDA_X = types.SimpleNamespace(device=torch.device('cuda', 0))


def test_use_cuda_rules(monkeypatch):
    monkeypatch.delenv('PSTYLE_OPS_REF', raising=False)
    assert _impl.use_cuda(None, FAKE_CUDA_X) and _impl.use_cuda('cuda', FAKE_CUDA_X)
    assert not _impl.use_cuda('ref', FAKE_CUDA_X)
    assert not _impl.use_cuda(None, torch.zeros(1)) and not _impl.use_cuda('cuda', torch.zeros(1))
    for value in ['1', 'true', 'yes']:
        monkeypatch.setenv('PSTYLE_OPS_REF', value)
        assert not _impl.use_cuda(None, FAKE_CUDA_X) and not _impl.use_cuda('cuda', FAKE_CUDA_X)
    monkeypatch.setenv('PSTYLE_OPS_REF', '0')
    assert _impl.use_cuda(None, FAKE_CUDA_X)
    with pytest.raises(ValueError, match="impl must be None, 'ref' or 'cuda', got 'gpu'"):
        _impl.use_cuda('gpu', FAKE_CUDA_X)


def test_no_build_at_import():
    code = ('import sys, torch_utils.ops.bias_act, torch_utils.ops.upfirdn2d, torch_utils.ops.conv2d_resample, '
            'torch_utils.ops.modulated_conv2d; '
            'assert "pstyle.torch_utils.custom_ops" not in sys.modules and "torch.utils.cpp_extension" not in sys.modules')
    subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)


def test_ref_forced_ops_never_ask_for_a_plugin(monkeypatch):
    """PSTYLE_OPS_REF=1 (or a CPU tensor) runs `ref` without touching the build machinery."""
    def boom(*args, **kwargs):
        raise AssertionError('plugin requested')
    monkeypatch.setattr(custom_ops, 'get_plugin', boom)
    monkeypatch.setenv('PSTYLE_OPS_REF', '1')
    x = torch.randn(1, 2, 4, 4)
    bias_act.bias_act(x, torch.zeros(2), act='lrelu', impl='cuda')
    upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]), impl='cuda')


# --------------------------------------------------------------------------------------------------
# Build failures: exactly one warning, then the ref path.

@pytest.fixture
def fresh_custom_ops(tmp_path, monkeypatch):
    monkeypatch.setenv('PSTYLE_CACHE_DIR', str(tmp_path))
    custom_ops.reset()
    yield
    custom_ops.reset()


def _build_warnings(record):
    return [w for w in record if issubclass(w.category, custom_ops.PluginBuildWarning)]


def test_failed_build_warns_once_and_falls_back(fresh_custom_ops, monkeypatch):
    from torch.utils import cpp_extension
    calls = []

    def failing_load(**kwargs):
        calls.append(kwargs['name'])
        raise OSError('CUDA_HOME environment variable is not set. Please set it to your CUDA install root.')
    monkeypatch.setattr(cpp_extension, 'load', failing_load)
    monkeypatch.setattr(_impl, 'use_cuda', lambda impl, x: True)  # Pretend the tensors live on a GPU.
    x, b = torch.randn(2, 3, 5, 5), torch.randn(3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        for _ in range(3):
            y = bias_act.bias_act(x, b, act='lrelu', clamp=0.5)
            z = upfirdn2d.upsample2d(x, f)
    torch.testing.assert_close(y, bias_act.bias_act(x, b, act='lrelu', clamp=0.5, impl='ref'))
    torch.testing.assert_close(z, upfirdn2d.upsample2d(x, f, impl='ref'))
    assert sorted(calls) == ['pstyle_bias_act_plugin', 'pstyle_upfirdn2d_plugin']  # One attempt per plugin.
    found = _build_warnings(record)
    assert len(found) == 1, [str(w.message) for w in found]  # The same cause is reported once.
    message = str(found[0].message)
    for needle in ['CUDA_HOME environment variable is not set', 'reference ops', 'ninja', 'PSTYLE_OPS_REF=1']:
        assert needle in message


def test_real_compiler_error_warns_once(fresh_custom_ops, tmp_path, monkeypatch):
    """A broken source goes through the real ninja build; the compiler's error is named in the warning."""
    if not (shutil.which('c++') or shutil.which('g++')):
        pytest.skip('no host C++ compiler')
    if shutil.which('ninja') is None and not Path(sys.executable).with_name('ninja').exists():
        pytest.skip('ninja not found (pip install ninja)')
    src = tmp_path / 'broken_op.cpp'
    src.write_text('int main( { return 0 }\n')
    monkeypatch.setenv('PATH', f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert custom_ops.get_plugin('pstyle_broken_plugin', [src]) is None
        assert custom_ops.get_plugin('pstyle_broken_plugin', [src]) is None  # Cached failure: no rebuild.
    found = _build_warnings(record)
    assert len(found) == 1
    assert "could not build the C++ plugin 'pstyle_broken_plugin'" in str(found[0].message)  # .cpp only: a CPU plugin
    assert 'error' in str(found[0].message).lower()
    assert list((tmp_path / 'torch_extensions').glob('pstyle_broken_plugin-*/build_error.log'))

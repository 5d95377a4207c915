"""What the CPU can do fast: bf16 convolutions pay off only with AMX or AVX-512 BF16."""

import functools
import platform
import warnings


@functools.lru_cache(None)
def cpu_flags():
    """The CPU feature flags from /proc/cpuinfo (Linux), else an empty set."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(None)
def has_fast_bf16():
    """True where oneDNN has native bf16 kernels (AMX or AVX-512 BF16); elsewhere bf16 is emulated."""
    try:
        import torch
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, ImportError):
        return bool({'amx_bf16', 'avx512_bf16'} & cpu_flags())


def describe():
    flags = cpu_flags()
    simd = [f for f in ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2') if f in flags]
    return f'cpu {platform.processor() or platform.machine()} ({", ".join(simd) or "no SIMD flags read"})'


def warn_if_slow_bf16():
    """bf16 on a CPU without AMX/AVX-512 BF16 is emulated and several times slower than fp32."""
    if not has_fast_bf16():
        warnings.warn('this CPU has neither AMX nor AVX-512 BF16: bf16 convolutions are emulated and run '
                      'several times slower than fp32 here; use --precision fp32', RuntimeWarning, stacklevel=3)

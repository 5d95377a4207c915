from .util import EasyDict  # noqa: F401 (NVIDIA's dnnlib exports it at the top level)

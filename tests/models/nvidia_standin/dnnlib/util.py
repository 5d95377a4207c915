"""Stand-in for NVIDIA's dnnlib.util: only EasyDict."""


class EasyDict(dict):
    """A dict whose items are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]

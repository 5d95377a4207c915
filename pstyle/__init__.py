"""portrait-stylegan: one import name, `pstyle`, over the repository's folders.

`pstyle.models` (generator runtime), `pstyle.projectors`, `pstyle.datasets`, `pstyle.stylize`,
`pstyle.metrics`, `pstyle.training`, `pstyle.torch_utils` are the folders `models/`, `projectors/`, ...
at the repository root. Installed (`pip install .` or `-e .`), setuptools maps them (pyproject's
package-dir). Run from a source checkout without installing (`PYTHONPATH=.`), the root is searched as
well, so the subpackages resolve to the same checkout as this file.
"""

from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / 'pyproject.toml').is_file() and (_ROOT / 'models' / 'networks.py').is_file():
    __path__.append(str(_ROOT))  # noqa: F821 (a package's __path__)

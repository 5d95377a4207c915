"""The package's shape, enforced: imports point downward (no cycle between files, counting imports inside
functions), in-function imports of our own modules stay few and say why, and the installed distribution
claims one top-level import name."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ('torch_utils', 'models', 'projectors', 'datasets', 'metrics', 'stylize', 'baselines', 'training', 'serve', 'pstyle')
MAX_IN_FUNCTION = 15


def source_modules():
    """{'models.networks': path, ...} for every source file of the package (folders as mapped into pstyle)."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob('*.py')):
            name = '.'.join(path.relative_to(REPO).with_suffix('').parts)
            out[name.removesuffix('.__init__')] = path
    return out


def resolve(target, current, is_package, modules):
    """The module of ours an import names ('pstyle.models.render' -> 'models.render'), or None."""
    parts = target.split('.')
    if parts[0] == 'pstyle' and len(parts) > 1 and parts[1] in FOLDERS[:-1]:
        parts = parts[1:]
    while parts:
        if '.'.join(parts) in modules and '.'.join(parts) != current:
            return '.'.join(parts)
        parts = parts[:-1]
    return None


def import_graph(modules):
    """(edges {module: set of modules}, in-function imports [(module, line, text)])."""
    edges, inner = {m: set() for m in modules}, []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding='utf-8'))
        in_func = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
        is_package = path.name == '__init__.py'
        lines = path.read_text(encoding='utf-8').splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    pkg = mod.split('.') if is_package else mod.split('.')[:-1]
                    base = '.'.join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [f'{base}.{a.name}' for a in node.names]
            else:
                continue
            found = {t for t in (resolve(x, mod, is_package, modules) for x in targets) if t}
            edges[mod] |= found
            if found and id(node) in in_func:
                inner.append((mod, node.lineno, lines[node.lineno - 1].strip()))
    return edges, inner


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_files():
    edges, _ = import_graph(source_modules())
    assert cycles(edges) == []


def test_the_cycle_detector_sees_in_function_imports(tmp_path):
    """The checker itself: a cycle closed only by an import inside a function is still a cycle."""
    (tmp_path / 'a.py').write_text('import b\n')
    (tmp_path / 'b.py').write_text('def f():\n    import a\n')
    modules = {'a': tmp_path / 'a.py', 'b': tmp_path / 'b.py'}
    edges, inner = import_graph(modules)
    assert cycles(edges) == [['a', 'b']] and [m for m, _, _ in inner] == ['b']


def test_in_function_imports_are_few_and_give_a_reason():
    _, inner = import_graph(source_modules())
    assert len(inner) <= MAX_IN_FUNCTION, inner
    unexplained = [f'{m}:{line} {text}' for m, line, text in inner if '#' not in text]
    assert unexplained == [], 'an in-function import of our own code needs a comment saying why'


def test_layers_point_downward():
    """torch_utils < models < metrics < projectors < datasets < stylize < baselines < training < serve < pstyle."""
    rank = {'torch_utils': 0, 'models': 1, 'metrics': 2, 'projectors': 3, 'datasets': 4, 'stylize': 5,
            'baselines': 6, 'training': 7, 'serve': 8, 'pstyle': 9}
    edges, _ = import_graph(source_modules())
    upward = [f'{a} -> {b}' for a, targets in edges.items() for b in targets
              if rank[b.split('.')[0]] > rank[a.split('.')[0]]]
    assert upward == []


def test_installed_distribution_has_one_top_level_name():
    text = (REPO / 'pyproject.toml').read_text()
    packages = re.search(r'^packages = \[(.*?)\]', text, re.S | re.M).group(1)
    names = re.findall(r'"([\w.]+)"', packages)
    assert names and {n.split('.')[0] for n in names} == {'pstyle'}
    mapped = dict(re.findall(r'^"(pstyle[\w.]*)" = "([\w/]+)"$', text, re.M))
    assert {f'pstyle.{f}' for f in FOLDERS[:-1]} <= set(mapped) and mapped['pstyle.models'] == 'models'

"""Folder runs: the one way every folder command lists its inputs, names its outputs, isolates a failing
item, records what it did and resumes.

- Inputs: a file, a folder (the images directly inside it, sorted by name) or a list of both, in that order.
- Names (`unique_names`): an item is named by its file stem, Unicode kept as it is. Names are compared
  ignoring case and Unicode normalisation (`y.PNG` and `y.png`, or NFC and NFD spellings, would share a
  file on macOS and Windows); the first input keeps its stem, a later one gets `_<extension>` appended
  (`x.jpg`, `x.png` -> `x`, `x_png`), then `_2`, `_3`, ... until the name is unused. Reserved names (a
  command's own files) are never given out. So no two items of a run ever write the same file.
- Failures: `FolderRun.isolate` records a typed error (`torch_utils.errors`: bad input, divergence, out of
  memory) as that item's failure, with one line; anything else propagates, after the manifest is saved.
- Manifest: rewritten atomically after every item; maps every input to its name, status (pending, ok,
  failed), outputs (paths relative to the manifest's folder) and error.
- Resume: items whose entry is ok, for the same input file, with every output still on disk, are skipped;
  the earlier run must have recorded the same `resume_key` (network, settings), else it is refused.
"""

import contextlib
import dataclasses
import json
import os
import unicodedata
from pathlib import Path

from pstyle.torch_utils.errors import one_line, typed_error
from pstyle.torch_utils.fileio import atomic_write_json, jsonable

# File name endings treated as images in a folder (anything else in it is ignored).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif', '.ppm', '.pgm')
MANIFEST_FORMAT = 'pstyle-folder-run'
MANIFEST_VERSION = 1


def list_images(folder) -> list:
    """Image files (by name ending) directly inside `folder`, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def list_inputs(inputs) -> list:
    """A folder (its images, sorted), one file, or a list of files/folders -> list of Paths, in order."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise ValueError(f'{item}: no image files in this folder')
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f'{item}: no such file or folder')
    if not files:
        raise ValueError('no input images')
    return files


def _fold(name):
    """The form two names are compared in: case-folded NFC (what case-insensitive file systems see)."""
    return unicodedata.normalize('NFC', name).casefold()


def unique_names(paths, reserved=()) -> list:
    """One output name per input path (see the module docstring); deterministic for a given input order."""
    paths = [Path(p) for p in paths]
    return unique_pairs([(p.stem, p.suffix[1:].lower()) for p in paths], reserved)


def unique_labels(labels, reserved=()) -> list:
    """The same rule for plain names (style names, seeds): a repeated one gets `_2`, `_3`, ..."""
    return unique_pairs([(str(label), '') for label in labels], reserved)


def unique_pairs(stems, reserved=()) -> list:
    """The rule itself, on (stem, extension without the dot, '' for none) pairs."""
    taken = {_fold(r) for r in reserved}
    firsts = {}
    for k, (stem, _) in enumerate(stems):  # The first input of each stem keeps it, even against a later `_ext` name.
        if _fold(stem) not in taken:
            firsts.setdefault(_fold(stem), k)
    taken |= set(firsts)
    names = []
    for k, (stem, ext) in enumerate(stems):
        if firsts.get(_fold(stem)) == k:
            names.append(stem)
            continue
        base = f'{stem}_{ext}' if ext else stem
        name, n = base, 2
        while _fold(name) in taken:
            name, n = f'{base}_{n}', n + 1
        taken.add(_fold(name))
        names.append(name)
    return names


@dataclasses.dataclass(frozen=True)
class Item:
    source: Path                # the input file
    name: str                   # its unique output name (no extension)


def plan(inputs, reserved=()) -> list:
    """[Item] for `inputs` (see `list_inputs`), uniquely named."""
    files = list_inputs(inputs)
    return [Item(f, n) for f, n in zip(files, unique_names(files, reserved))]


class FolderRun:
    """The items of one folder command and its manifest (`manifest`, a JSON file).

    header() -> dict: the command's own fields of the manifest, asked at every save (may be None).
    resume_key: JSON-able; a resumed run must find the same one in the manifest (network, settings).
    root: the folder outputs are recorded relative to (default: the manifest's).
    """

    def __init__(self, items, manifest, command, header=None, resume_key=None, resume=False, log=print, root=None):
        self.items = list(items)
        self.path = Path(manifest)
        self.root = Path(root) if root is not None else self.path.parent
        self.command = command
        self.header = header or dict
        self.resume_key = jsonable(resume_key)
        self.log = log or (lambda _: None)
        self._sources = {it.name: it.source for it in self.items}
        self.entries = {it.name: dict(input=str(it.source), name=it.name, status='pending', outputs=[])
                        for it in self.items}
        self.resumed = []
        if resume:
            self._resume()

    # -- resume ----------------------------------------------------------------
    def previous(self):
        """The manifest an earlier run left here (dict), or None."""
        if not self.path.is_file():
            return None
        try:
            doc = json.loads(self.path.read_text(encoding='utf-8'))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f'{self.path}: cannot resume, the manifest is not valid JSON ({e})') from None
        if not isinstance(doc, dict) or doc.get('format') != MANIFEST_FORMAT or doc.get('command') != self.command:
            raise ValueError(f'{self.path}: cannot resume, not the manifest of a `{self.command}` run')
        return doc

    def _resume(self):
        doc = self.previous()
        if doc is None:
            return
        if _canonical(doc.get('resume_key')) != _canonical(self.resume_key):
            raise ValueError(f'{self.root} holds results of another network or other settings: '
                             'use a new --outdir, or drop --resume to overwrite')
        for old in doc.get('items', []):
            entry = self.entries.get(old.get('name'))
            if entry is None or old.get('status') != 'ok' or old.get('input') != entry['input']:
                continue
            if all((self.root / out).is_file() for out in old.get('outputs', [])):
                entry.clear()
                entry.update(old)
                self.resumed.append(old['name'])

    def reset(self, item):
        """Do `item` again (a resumed entry whose share of a run-wide file, such as latents, is missing)."""
        entry = self.entry(item)
        entry.clear()
        entry.update(input=str(self._sources[entry_name(item)]), name=entry_name(item), status='pending', outputs=[])
        if entry_name(item) in self.resumed:
            self.resumed.remove(entry_name(item))

    def pending(self):
        """The items still to do (all of them, less those resumed)."""
        return [it for it in self.items if self.entries[it.name]['status'] != 'ok']

    # -- recording -------------------------------------------------------------
    def entry(self, item):
        return self.entries[entry_name(item)]

    def relative(self, path):
        """A path under the manifest's folder, as the manifest records it."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def succeed(self, item, outputs=(), **fields):
        """Mark `item` ok with its output files (absolute or relative to the manifest's folder); save."""
        entry = self.entry(item)
        entry.update(fields, status='ok', outputs=[self.relative(p) for p in outputs])
        entry.pop('error', None)
        entry.pop('error_type', None)
        self.save()
        self.log(f'{entry["input"]} -> {", ".join(entry["outputs"]) or "ok"}')
        return entry

    def fail(self, item, exc, stage=None):
        """Record a typed error as `item`'s failure (one line; `stage` says where); save."""
        entry = self.entry(item)
        entry.update(status='failed', error=one_line(exc), error_type=getattr(exc, 'kind', type(exc).__name__))
        if stage is not None:
            entry['stage'] = stage
        self.save()
        where = f'{stage}: ' if stage else ''
        self.log(f'{entry["input"]}: failed ({where}{entry["error"]})')
        return entry

    @contextlib.contextmanager
    def isolate(self, item, stage=None):
        """Run the block for one item: a typed error (or out of memory) becomes its failure and the run goes
        on; any other exception propagates after the manifest is saved."""
        try:
            yield self.entry(item)
        except Exception as e:  # noqa: BLE001 -- sorted below: typed errors are recorded, the rest re-raised
            typed = typed_error(e)
            if typed is None:
                self.save()
                raise
            self.fail(item, typed, stage)

    def attempt(self, item, fn, *args, stage=None):
        """(True, fn(*args)), or (False, None) once a typed error was recorded as `item`'s failure."""
        with self.isolate(item, stage):
            return True, fn(*args)
        return False, None

    # -- the manifest ------------------------------------------------------------
    def document(self):
        entries = [self.entries[it.name] for it in self.items]
        failed = [e for e in entries if e['status'] == 'failed']
        doc = dict(format=MANIFEST_FORMAT, version=MANIFEST_VERSION, command=self.command, **(self.header() or {}))
        doc.update(resume_key=self.resume_key, num_items=len(entries),
                   num_ok=sum(e['status'] == 'ok' for e in entries), num_failed=len(failed),
                   failures=[{k: e[k] for k in ('input', 'name', 'stage', 'error', 'error_type') if k in e} for e in failed],
                   items=entries)
        return jsonable(doc)

    def save(self):
        doc = self.document()
        atomic_write_json(self.path, doc)
        return doc


def entry_name(item):
    """An Item's name, or the name itself."""
    return item if isinstance(item, str) else item.name


def _canonical(value):
    return json.dumps(jsonable(value), sort_keys=True)

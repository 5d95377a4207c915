"""The `pstyle` console command.

Each subcommand is a thin click shell that lives in a `pstyle/cmd_*.py` module and calls an
importable function from `training/`, `projectors/`, `stylize/` or `metrics/`. Subcommands are
imported lazily, so `pstyle --help` stays fast and one broken optional dependency (say dlib)
cannot take the other subcommands down with it.
"""

import importlib

import click

# name -> (module, attribute). Kept in one table so the command surface is visible at a glance.
SUBCOMMANDS = {
    'demo':        ('pstyle.cmd_demo', 'demo'),
    'generate':    ('pstyle.cmd_generate', 'generate'),
    'style-mix':   ('pstyle.cmd_generate', 'style_mix'),
    'convert':     ('pstyle.cmd_checkpoint', 'convert'),
    'info':        ('pstyle.cmd_checkpoint', 'info'),
    'bench':       ('pstyle.cmd_bench', 'bench'),
    'metrics':     ('pstyle.cmd_metrics', 'metrics'),
    'align':       ('pstyle.cmd_align', 'align'),
    'paste-back':  ('pstyle.cmd_align', 'paste_back'),
    'project':     ('pstyle.cmd_project', 'project'),
    'swap':        ('pstyle.cmd_stylize', 'swap'),
    'mix':         ('pstyle.cmd_stylize', 'mix'),
    'layers':      ('pstyle.cmd_stylize', 'layers'),
    'stylize':     ('pstyle.cmd_stylize', 'stylize'),
    'stylize-grid': ('pstyle.cmd_stylize', 'stylize_grid'),
    'fewshot':     ('pstyle.cmd_fewshot', 'fewshot_command'),
    'dataset':     ('pstyle.cmd_dataset', 'dataset'),
    'train':       ('pstyle.cmd_train', 'train'),
    'train-encoder': ('pstyle.cmd_train_encoder', 'train_encoder_cmd'),
    'nst':         ('pstyle.cmd_baselines', 'nst'),
    'adain':       ('pstyle.cmd_baselines', 'adain'),
    'adain-train': ('pstyle.cmd_baselines', 'adain_train'),
    'cyclegan':    ('pstyle.cmd_baselines', 'cyclegan'),
    'compare':     ('pstyle.cmd_compare', 'compare_command'),
    'serve':       ('pstyle.cmd_serve', 'serve'),
    'cyclegan-train': ('pstyle.cmd_baselines', 'cyclegan_train'),
    'distill':     ('pstyle.cmd_baselines', 'distill'),
    'export':      ('pstyle.cmd_baselines', 'export'),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx):
        return sorted(name for name, (mod, _) in SUBCOMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings=dict(help_option_names=['-h', '--help']))
@click.version_option(package_name='portrait-stylegan')
def main():
    """portrait-stylegan: StyleGAN2 portrait stylization (generate, convert, align, project,
    swap/mix, stylize, train, metrics, serve)."""


if __name__ == '__main__':
    main()

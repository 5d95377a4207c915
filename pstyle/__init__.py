"""portrait-stylegan command line: `pstyle <subcommand>`; the work itself lives in the packages."""

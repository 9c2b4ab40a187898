"""The `flux-perf` command line: one module per subcommand (each adds its parser with `register`),
their shared options and helpers in shared.py. cli.py only dispatches."""

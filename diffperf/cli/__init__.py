"""The `diffperf` command line: one subcommand per tool (diffperf.cli.main lists them).

Each command is a module here with `add_arguments(parser)`, `run(args, parser) -> exit status`
and `main(argv)` for the command alone (tools/<name>.py calls it, so documented commands such
as `python3 tools/update_baselines.py` keep working).
"""

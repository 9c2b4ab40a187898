"""Running cases, shared by the pytest plugin (plugin/) and the `flux-perf` command line
(commands/): the frozen settings of a run (config.py), the session that measures and judges one
case at a time (session.py), the sanctioned update of a case's references (update.py), and
SIGTERM taken as Ctrl-C (interrupts.py). It uses the layers below it, never a front end."""

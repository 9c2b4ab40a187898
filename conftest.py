# Loads the flux-perf pytest plugin when the checkout is used without being
# installed (e.g. on a GPU box with the checkout on PYTHONPATH). When the
# package is installed, its pytest11 entry point has the same name, so pytest
# registers the plugin only once.
pytest_plugins = ["flux_perf.plugin"]

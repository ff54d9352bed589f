# The suite's pytest plugin; everything it wires lives in the diffperf package.
pytest_plugins = ["diffperf.plugin"]

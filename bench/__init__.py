"""Benchmarks: `make bench` (or `python -m bench [name ...]`) runs every module here that has a
`main()`, each printing a table of measurements taken side by side in one run. Numbers belong
here, not in timed tests: the machines are shared and noisy."""

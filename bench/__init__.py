"""Benchmarks of the cascade runbook: availability, contention, crashes, inspection scale, cascades.

Each module runs as ``python -m bench.<name> [--scale small|full] [--dsn DSN | --embedded]`` from the
project root, prints a table of figures and exits non-zero when a target is missed. Nothing here is
offered to users: the one-transaction baseline migration lives in ``bench/availability.py`` only.
"""

"""Tests of ``prune_core``."""

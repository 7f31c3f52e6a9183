"""Tests of ``sweeps``."""

"""Tests of ``optuna_sweep``."""

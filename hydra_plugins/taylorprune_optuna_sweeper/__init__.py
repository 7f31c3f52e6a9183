"""The Optuna sweeper's registration with Hydra: ``optuna_sweeper.OptunaSweeper`` and its structured configs.

Hydra's plugin scan imports every module here, so none of them imports Optuna; the sweeper
itself is the ``optuna_sweep`` package.
"""

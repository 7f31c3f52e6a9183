"""sweeps: the Hydra app that runs prune_core over a study of pruning settings.

Rooms: `job` (config, data), `builders` (models, datasets), `base_network` (the trained network
a study starts from), `tracking` (MLflow), `deployment` (ONNX, latency), `process` (signals,
devices), and `layout`, the neutral description of what a run logs that `analysis` reads too.
`python -m sweeps.run` is the entry point."""

"""sweeps: datasets, models and the runnable jobs built on prune_core."""

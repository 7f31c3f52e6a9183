"""MLflow tracking of the app: the store, the study's parent run, each job's run, what a run logs, the
study's summary and its progress (the front's hypervolume after each trial), and the reaping of runs
that dead processes left RUNNING."""

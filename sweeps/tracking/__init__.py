"""MLflow tracking of the app: the store, the study's parent run, each job's run, what a run logs, the
study's summary, and the reaping of runs that dead processes left RUNNING."""

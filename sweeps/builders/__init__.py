"""What a config's `_target_` may build: the app's networks (`models`) and datasets (`datasets`)."""

"""Concerns of the worker process: the signals that interrupt it and the device it runs on."""

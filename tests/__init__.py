"""The test suite, laid out like the packages it tests; shared helpers in ``support`` and ``conftest``."""

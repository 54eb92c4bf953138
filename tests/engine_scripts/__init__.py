"""Child-process entry points of the engine tests."""

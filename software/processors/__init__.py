"""Processing types (plugins on the entry-point group medarchive.processors) and the built-in ones."""

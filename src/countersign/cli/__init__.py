"""The ``countersign`` command line: parses arguments, calls the library, formats output."""

"""The ``enfold`` command line."""

"""Fixtures of the server tests live in tests/conftest.py (shared with the client tests)."""

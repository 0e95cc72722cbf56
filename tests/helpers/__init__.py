"""Test helpers (plain functions and constants); tests/conftest.py holds only the fixtures."""

"""Serving tests (a package so helpers import relatively and module names stay unique)."""

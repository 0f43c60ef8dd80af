"""Shared foundations: validation of settings and arrays, typed results, seeding, provenance."""

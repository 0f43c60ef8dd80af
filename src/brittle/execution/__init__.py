"""Execution: the run store (crash-safe, resumable) and the executors that compute batches (local, Ray)."""

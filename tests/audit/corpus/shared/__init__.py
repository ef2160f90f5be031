"""Helpers the deploy script copies into every function folder."""

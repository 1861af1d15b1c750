"""Tests of the adapters (fusedb.limits, fusedb.django) against the real libraries
they plug into."""

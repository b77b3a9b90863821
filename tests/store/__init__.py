"""Tests of level 3, cowspec.store."""

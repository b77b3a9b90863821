"""Tests of level 1, cowspec.fs."""

"""Tests of the trace formats, cowspec.formats."""

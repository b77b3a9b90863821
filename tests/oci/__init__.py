"""Tests of level 2, cowspec.oci."""

"""Tests of the harness: the command, image reading, drivers and machines."""

"""Tests of splip_engine.data."""

"""Whole-layer dissection: running top-k exemplars and statistics of every unit."""

"""coin-scale: explain what the units of vision models do, a whole layer at a time, on Ray."""

__version__ = "0.1.0"

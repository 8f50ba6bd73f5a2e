"""The image sweep: one image -> the units that drive its prediction -> their evidence."""

"""Attribution of a prediction to units, and (later) chains of units across layers."""

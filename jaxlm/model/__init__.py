"""The decoder model: layers, the scanned blocks, parameter shapes."""

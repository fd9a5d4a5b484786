"""Foundations every stage uses: typed config, atomic writes, the error shape, process groups and collectives, and the one reader, resize rule and palette of mask files."""

"""The optional FFCV store for the static-image stage: its format, writer and loader."""

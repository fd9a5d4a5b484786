"""STCNN training pipeline and data lake."""

__version__ = "0.1.0"

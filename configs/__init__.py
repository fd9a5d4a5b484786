"""The default configs, installed as the package ``pipeline.configs`` (a folder of YAML files;
pipeline/core/config.py's ``find_config`` looks names up here)."""

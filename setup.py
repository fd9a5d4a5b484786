"""The package list of the distribution (everything else: pyproject.toml).

The default configs stay in the repository's top-level ``configs/`` folder and ship inside the
distribution as the package ``pipeline.configs``, its subfolders as its subpackages
(``package-dir`` and ``package-data`` in pyproject.toml; pipeline/core/config.py's
``find_config`` reads them). pyproject.toml cannot both discover packages and list more, mapped
from another folder, so the list is made here.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIGS = ["pipeline.configs"] + [f"pipeline.configs.{p}" for p in find_namespace_packages("configs")]

setup(packages=find_packages(include=["pipeline*"]) + CONFIGS)

"""The console commands (``stcnn-*`` in pyproject.toml): one module per command, each with a
``main(argv)``. The scripts in ``launch/`` call the same functions (and are what torchrun runs)."""

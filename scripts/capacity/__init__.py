"""The capacity plan (``scripts/capacity_plan.py`` writes ``docs/scale.md``), one job per module:

  sources.py   where each figure comes from: the cited sources and the recorded inputs
  fmt.py       how figures and tables are written
  model.py     the plan itself: lake bytes and shards per set, each phase on N GPUs, what binds
  document.py  the document, section by section, and what the pipeline does about each limit
  inputs.py    the inputs read from the results folder, the configs and the scripts -> the text
"""

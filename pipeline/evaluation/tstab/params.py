"""The official T measure's parameters (DAVIS 2016): simplification and densification tolerances,
shape-context bins and radii."""

from __future__ import annotations




CONT_TH = 3.0  # polygon simplification tolerance (on the doubled grid)
CONT_TH_UP = 3.0  # densification: longest segment allowed, in pixels
NBINS_THETA = 12
NBINS_R = 5
R_INNER = 1.0 / 8.0
R_OUTER = 2.0
EPS = 2.2204e-16

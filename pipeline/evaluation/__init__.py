"""Evaluation of segmentation results: the DAVIS measures (J, F, T and their statistics), the
DAVIS 2016/2017 semi-supervised protocol with the official CSV outputs, and mean IoU on
YouTube-Objects.

    from pipeline.evaluation import jaccard, boundary_f, temporal_instability, db_statistics
    from pipeline.evaluation.davis import evaluate_davis
    from pipeline.evaluation.youtube_objects import evaluate_youtube_objects
"""

from pipeline.evaluation.metrics import (BOUND_TH, T_SCALE, boundary_f, boundary_map, boundary_radius, db_statistics,
                      decay_bins, disk, jaccard, jaccard_from_labels, temporal_instability,
                      temporal_instability_sequence)

__all__ = ["BOUND_TH", "T_SCALE", "boundary_f", "boundary_map", "boundary_radius",
           "db_statistics", "decay_bins", "disk", "jaccard", "jaccard_from_labels",
           "temporal_instability", "temporal_instability_sequence"]

"""Training: losses (Eq. 1-3) and, as they land, the loop and the phases of Sec. 3.3."""

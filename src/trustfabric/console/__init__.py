"""Console: the operator's web console (a leaf: nothing imports it)."""

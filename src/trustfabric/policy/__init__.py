"""Policy: the policy engine and administrator (NIST 800-207 PE/PA).

Cedar policies over an entity store and live signals decide each access; the
engine pre-computes per-principal decision tables, versioned by epochs, and
publishes invalidations so enforcement points never evaluate policy on the hot
path. ``cedar`` is the only module that imports cedarpy; ``loading`` parses and
validates a set, ``planner`` plans decision tables, ``engine`` decides.
"""

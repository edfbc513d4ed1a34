"""Labels: operation taxonomies, OpenPack annotations and mappings between taxonomies, and
the metrics that score predictions against labels."""

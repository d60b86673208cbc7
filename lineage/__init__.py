"""lineage: what happened to every version (runs, OpenLineage events, reports) and who received it."""

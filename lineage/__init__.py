"""lineage: what happened, for auditors. Floor 4: imports common/, keys/, sharing/.

    lineage.runs         run records (common.run.RunRecord) kept per dataset
    lineage.openlineage  OpenLineage events of each sync (file transport)
    lineage.report       the lineage report of a version (JSON, HTML)
    lineage.audit        the hash-chained, signed access log
"""

"""common: the ground floor. Types and facts every other floor uses, importing nothing of ours.

    common.errors   one root (GovshareError) and its branches, each an exit code
    common.catalog  the catalog loader: datasets, fields, sharing classes, subscribers, grants
    common.yaml_strict  YAML as the catalog reads it: no repeated keys, no aliases, bounded sizes
    common.checks   the vocabulary of checks a catalog may name (light: no pandas, no GX)
    common.columns  the names of the system columns
    common.schema   canonical Arrow schemas
    common.home     GOVSHARE_HOME and its folders
    common.times    the sources' time zone, today, UTC time stamps
    common.files    canonical JSON, file digests, atomic writes
    common.arrays   small Arrow helpers
    common.run      a run of a sync and each stage's typed result (Plan, Validated, Protected, ...)

Importing this package is light; pyarrow is imported only by the modules that need it.
"""

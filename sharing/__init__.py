"""sharing: the published side. Floor 3: imports common/, keys/, validation/ (for key normalisers).

    sharing.store    immutable, signed, chained versions of each dataset; atomic visibility
    sharing.publish  a run's staged parts (PartFiles) -> the version's files and signed manifest
    sharing.decide   the publish decision against the state index (DuckDB)
    sharing.index    the state index: key ref, fingerprint, version of every published key
    sharing.changes  the index's schema and the ref columns published beside the fields
    sharing.state    the watermark, advanced only after a publish
    sharing.verify   signatures, digests and the chain
    sharing.read     decrypting and folding versions; sharing.feed: the change feed
    sharing.pull     a subscriber's granted view (access decided first); sharing.deliver: into a database
    sharing.disputes objections (异议) and their resolution
"""

"""Change detection against the last published state.

Every good row gets two 16-byte columns before it is published (keys.pseudonyms): ``_key_ref``,
a keyed pseudonym of its key, so the state index holds no identifier in clear, and
``_fingerprint``, a hash of its published fields.

The state index (sharing.index: key_ref, fingerprint, version per key of the current published
state) says what is published. A re-read row whose fingerprint equals the index's is not
published again; a delete of a key the index does not hold is no change. A stale index only ever
causes a harmless re-publication.
"""

from __future__ import annotations

import pyarrow as pa

from keys.pseudonyms import FINGERPRINT, KEY_REF, REF_TYPE

VERSION = "version"
INDEX_SCHEMA = pa.schema([(KEY_REF, REF_TYPE), (FINGERPRINT, REF_TYPE), (VERSION, pa.int64())])
# Published beside the fields: pseudonymous key ref and row fingerprint (hashes, no values), so
# readers can match disputes and state without decrypting keys. Never delivered to subscribers.
REF_FIELDS = (INDEX_SCHEMA.field(KEY_REF), INDEX_SCHEMA.field(FINGERPRINT))

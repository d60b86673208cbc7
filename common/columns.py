"""The names of the system columns: one constant each, importing nothing.

A source row carries its dataset's fields, then ``updated_at`` (the source's change time, naive
local time in common.times.SOURCE_ZONE) and ``is_deleted`` (1 = withdrawn at the source). A
subscriber's output carries ``_change_type``, ``_commit_version`` and ``_disputed``.
"""

from __future__ import annotations

UPDATED_AT = "updated_at"
IS_DELETED = "is_deleted"
SYSTEM_COLUMNS = (UPDATED_AT, IS_DELETED)
# Columns a subscriber's output always carries, after Delta Sharing's change data feed.
CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"
# True while an open objection (异议) names exactly this published record.
DISPUTED = "_disputed"

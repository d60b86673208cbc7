"""File URL tokens and bearer-token profiles of the Delta Sharing plain view, as units."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from common.home import Home
from service import filetokens, profiles
from service.state import token_digest

KEY = b"k" * 32
FILE = "population/00000001-0123456789abcdef0123.parquet"


def test_a_token_grants_its_subscriber_its_file_until_it_expires():
    token, expires = filetokens.issue(KEY, "approval-general", FILE, now=1000)
    assert expires == 1000 + filetokens.TTL_SECONDS
    grant = filetokens.check(KEY, token, now=1000 + filetokens.TTL_SECONDS - 1)
    assert (grant.subscriber, grant.file, grant.dataset) == ("approval-general", FILE, "population")
    with pytest.raises(filetokens.InvalidFileToken, match="expired"):
        filetokens.check(KEY, token, now=expires)


def test_altered_foreign_or_malformed_tokens_grant_nothing():
    token, _ = filetokens.issue(KEY, "approval-general", FILE, now=1000)
    body, mac = token.split(".")
    doc = json.loads(filetokens._unb64(body))
    other = filetokens._b64(json.dumps({**doc, "s": "approval-household"}).encode())
    longer = filetokens._b64(json.dumps({**doc, "e": doc["e"] + 10**6}).encode())
    flipped = f"{body}.{'B' if mac.startswith('A') else 'A'}{mac[1:]}"
    padding = f"{body}.{mac[:-1]}{'B' if mac.endswith('A') else 'A'}"  # even where only padding bits change
    for bad in (f"{other}.{mac}", f"{longer}.{mac}", flipped, padding,
                token + ".x", "", "no-dot", "a.b", "!!.??", "x" * 2000):
        with pytest.raises(filetokens.InvalidFileToken):
            filetokens.check(KEY, bad, now=1000)
    with pytest.raises(filetokens.InvalidFileToken, match="does not verify"):
        filetokens.check(b"j" * 32, token, now=1000)


def test_only_cache_file_names_are_tokenised():
    for bad in ("../keys/keys.json", "population/../../x.parquet", "/etc/passwd", "population/x.txt"):
        with pytest.raises(ValueError):
            filetokens.issue(KEY, "approval-general", bad)


def test_profiles_store_only_digests_and_expire(tmp_path):
    home = Home(tmp_path)
    issued = profiles.issue(home, "approval-general", "核验", days=2, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert issued.expiration_time == "2026-01-03T00:00:00Z"
    db = sqlite3.connect(tmp_path / "service" / "state.db")
    rows = db.execute("SELECT digest, subscriber, purpose FROM profiles").fetchall()
    assert rows == [(token_digest(issued.token), "approval-general", "核验")]
    assert issued.token.encode() not in (tmp_path / "service" / "state.db").read_bytes()
    assert (tmp_path / "service" / "state.db").stat().st_mode & 0o777 == 0o600
    binding = profiles.authenticate(home, f"Bearer {issued.token}", now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert (binding.subscriber, binding.purpose) == ("approval-general", "核验")
    with pytest.raises(profiles.Unauthenticated, match="expired"):
        profiles.authenticate(home, f"Bearer {issued.token}", now=datetime(2026, 1, 3, tzinfo=timezone.utc))
    for header in (None, "", "Bearer", f"Basic {issued.token}", "Bearer " + "A" * 43, f"Bearer {issued.token}x"):
        with pytest.raises(profiles.Unauthenticated):
            profiles.authenticate(home, header, now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    again = profiles.issue(home, "approval-general", "核验", days=1)
    assert again.token != issued.token and datetime.now(timezone.utc) + timedelta(days=1, seconds=5) > again.expires_at

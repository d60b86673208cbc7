"""Write shared secrets once: ``secrets-once.py PATH NAME=KIND ...`` writes ``export NAME=value``
lines to PATH (0600) unless PATH exists. KIND is ``urlsafe:N`` (secrets.token_urlsafe(N)),
``fernet`` (a Fernet key) or ``keyid`` (an access-key-like id). The file is written privately
and linked into place, so concurrent first runs agree on one set and an existing set is never
replaced (a Fernet key must outlive every secret it encrypted)."""

import os
import secrets
import sys
import tempfile


def value(kind: str) -> str:
    if kind.startswith("urlsafe:"):
        return secrets.token_urlsafe(int(kind.split(":", 1)[1]))
    if kind == "fernet":
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    if kind == "keyid":
        return "GS" + secrets.token_hex(9).upper()
    raise SystemExit(f"secrets-once: unknown kind {kind!r}")


def main(path: str, specs: list[str]) -> None:
    if os.path.exists(path):
        return
    values = {name: value(kind) for name, _, kind in (spec.partition("=") for spec in specs)}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"export {name}={v}\n" for name, v in values.items()))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

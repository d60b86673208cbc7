"""The stock Delta Sharing client, run as a subprocess by the tests (its TLS trust comes from the
environment: REQUESTS_CA_BUNDLE for requests, SSL_CERT_FILE for aiohttp). Reads a JSON spec
{"profile", "dir", "ops": {name: {"kind", "table", ...}}} and prints one JSON line: per op, the
Parquet file its DataFrame was written to, or the error it raised."""

import json
import sys

import delta_sharing


def main() -> None:
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    out = {}
    for name, op in spec["ops"].items():
        url = f"{spec['profile']}#govshare.base.{op.get('table', '')}"
        try:
            if op["kind"] == "tables":
                client = delta_sharing.SharingClient(spec["profile"])
                out[name] = {"tables": sorted(t.name for t in client.list_all_tables())}
                continue
            if op["kind"] == "version":
                out[name] = {"version": delta_sharing.get_table_version(url)}
                continue
            if op["kind"] == "load":
                df = delta_sharing.load_as_pandas(url, version=op.get("version"))
            else:
                df = delta_sharing.load_table_changes_as_pandas(url, starting_version=op.get("start"),
                                                                ending_version=op.get("end"))
            path = f"{spec['dir']}/{name}.parquet"
            df.to_parquet(path)
            out[name] = {"path": path}
        except Exception as exc:  # reported to the test, which decides
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:800]}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

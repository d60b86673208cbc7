"""The sharing service (publisher side): HTTPS over the bureau's GOVSHARE_HOME.

It serves the Delta Sharing protocol (the plain view, for stock clients) and govshare's agent
protocol (manifests, encrypted files and key envelopes, for enrolled subscriber agents), and
writes every request into the access log.
"""

"""The subscriber agent (approval-system side): its own keys in GOVSHARE_AGENT_HOME, the
publisher's pinned signing key and CA, verified pulls over HTTPS, local decryption."""

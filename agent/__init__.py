"""The subscriber's agent: enrolment with the bureau's sharing service, verified pulls over
HTTPS, local decryption with the agent's own keys (never the bureau's)."""

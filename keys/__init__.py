"""Keys and protection: the keystore, a Parquet KMS over it, and encryption settings per file.

    keys.keystore    Keystore (master keys, signing keys, audit HMAC key; no pyarrow import)
    keys.kms         KeystoreKmsClient, crypto_factory, kms_connection_config
    keys.protection  column_encryption, staging_encryption, decryption_properties, Protection
    keys.pseudonyms  keyed pseudonyms of keys (_key_ref) and row fingerprints (RowHasher; DuckDB SHA-256, or SM3 in gm)
    keys.sm3vec      SM3 / HMAC-SM3 of many values at once, vectorised across rows in numpy
    keys.masking     masked keys for reports (110***********1234)

Floor 1: imports only common/.

Import the submodule you need; this package imports nothing heavy.
"""

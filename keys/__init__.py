"""Keys and protection: the keystore, a Parquet KMS over it, and encryption settings per file.

    keys.keystore    Keystore (master keys, signing keys, audit HMAC key; no pyarrow import)
    keys.kms         KeystoreKmsClient, crypto_factory, kms_connection_config
    keys.protection  column_encryption, staging_encryption, decryption_properties, Protection

Import the submodule you need; this package imports nothing heavy.
"""

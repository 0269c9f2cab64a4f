"""Keys and the vault: hash-key and KEK files, key providers (local file, PKCS#11), envelope
encryption with crypto-shredding and its key-store port."""

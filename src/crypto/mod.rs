//! Cryptography: keys, fingerprints, signatures, envelope encryption.

//! Storage: the trust and identity store contract and its implementations.

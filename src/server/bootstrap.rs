//! Preparing a data directory: the server key pair and a self-signed TLS certificate.

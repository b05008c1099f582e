//! TLS configuration of the listener (rustls with the ring provider).

//! A BTPS client: TLS connection to a server, one artifact line out, response lines in.

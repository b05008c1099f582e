//! What only a shared database has: migrations, several handles (nodes) on one
//! schema, a lost connection.

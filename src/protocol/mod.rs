//! Protocol core: wire types, classification, validation, canonical JSON.

pub mod json;

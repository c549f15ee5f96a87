//! Cross-crate tests live in tests/, one file per concern.

//! TFLite import.

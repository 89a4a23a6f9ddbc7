//! hip-sys (in progress).

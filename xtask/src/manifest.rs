//! The manifest written next to the artifacts: its schema and rules live in `attn-manifest`,
//! shared with `attn-host`, which reads it.
pub use attn_manifest::*;

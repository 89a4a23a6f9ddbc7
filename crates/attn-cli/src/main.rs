//! The `attn` command line.
fn main() {}

//! attn-host (in progress).

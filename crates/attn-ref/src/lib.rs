//! attn-ref (in progress).

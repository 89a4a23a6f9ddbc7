//! `#[kernel(threads = N)]` (optionally `blocks = M`): turns a plain Rust function into a GPU
//! kernel entry point.
//!
//! ```ignore
//! #[kernel(threads = 128)]
//! pub fn attn_fwd_f16_d64(p: &FwdParams) { fwd::run::<F16, 64>(p) }
//! ```
//!
//! expands to
//!
//! - the body as an ordinary `#[inline(always)] pub fn __body_attn_fwd_f16_d64(p: &FwdParams)`
//!   (compiled on every target, so the host can type-check and test it);
//! - on GPU targets (`cfg(gpu)`, set by `attn-kernels/build.rs`), an
//!   `extern "gpu-kernel" fn attn_fwd_f16_d64(w0: u64, …, w127: u64)` that rebuilds the parameter
//!   struct from its 1024-byte argument image (`attn_abi::KernArgs`) and calls the body;
//! - a `#[used]` marker static named `ATTN_KERNEL__<name>__threads_<N>` (with `__blocks_<M>` when
//!   the kernel asks for `M` resident blocks per SM, NVIDIA's `minctasm`). rustc has no attribute for
//!   launch bounds (`amdgpu-flat-work-group-size`, `.maxntid`), so `cargo xtask build-kernels`
//!   finds these markers in the post-LTO LLVM IR and adds the attributes itself.
use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{ItemFn, LitInt, parse_macro_input};

/// `attn_abi::KERNARG_WORDS` (a proc-macro crate cannot depend on it; every generated entry
/// asserts the two agree).
const WORDS: usize = 128;

/// Marks a kernel entry point; see the crate docs.
#[proc_macro_attribute]
pub fn kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut threads: Option<LitInt> = None;
    let mut blocks: Option<LitInt> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("threads") {
            threads = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("blocks") {
            blocks = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("expected `threads = N` or `blocks = M`"))
        }
    });
    parse_macro_input!(attr with parser);
    let Some(threads) = threads else {
        return syn::Error::new(proc_macro2::Span::call_site(), "missing `threads = N`")
            .to_compile_error()
            .into();
    };
    let func = parse_macro_input!(item as ItemFn);
    let name = func.sig.ident.clone();
    let body_name = format_ident!("__body_{}", name);
    let inputs = &func.sig.inputs;
    if inputs.len() != 1 {
        return syn::Error::new_spanned(inputs, "a kernel takes exactly one `&Params` argument")
            .to_compile_error()
            .into();
    }
    let param_ty = match inputs.first() {
        Some(syn::FnArg::Typed(pt)) => match &*pt.ty {
            syn::Type::Reference(r) => r.elem.clone(),
            other => {
                return syn::Error::new_spanned(other, "expected `&Params`")
                    .to_compile_error()
                    .into();
            }
        },
        _ => {
            return syn::Error::new_spanned(inputs, "expected `p: &Params`")
                .to_compile_error()
                .into();
        }
    };
    // `blocks = M` (resident blocks per SM asked of ptxas) joins the marker when not 1.
    let marker = match blocks.as_ref().map(|b| b.base10_digits()) {
        None | Some("1") => {
            format_ident!("ATTN_KERNEL__{}__threads_{}", name, threads.base10_digits())
        }
        Some(b) => format_ident!(
            "ATTN_KERNEL__{}__threads_{}__blocks_{}",
            name,
            threads.base10_digits(),
            b
        ),
    };
    let words: Vec<_> = (0..WORDS).map(|i| format_ident!("w{}", i)).collect();
    let attrs = &func.attrs;
    let vis = &func.vis;
    let block = &func.block;
    let doc = format!(
        "Body of the `{name}` kernel ({} threads per block).",
        threads
    );
    quote! {
        #[doc = #doc]
        #(#attrs)*
        #[inline(always)]
        #vis fn #body_name(#inputs) #block

        #[cfg(gpu)]
        #[doc = #doc]
        #[unsafe(no_mangle)]
        pub unsafe extern "gpu-kernel" fn #name(#(#words: u64),*) {
            const { assert!(::attn_abi::KERNARG_WORDS == #WORDS) };
            let args = ::attn_abi::KernArgs([#(#words),*]);
            let p: #param_ty = args.params();
            #body_name(&p)
        }

        #[cfg(gpu)]
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        #[used]
        pub static #marker: u32 = #threads;
    }
    .into()
}

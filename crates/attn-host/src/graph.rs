//! Stream capture into a replayable graph (CUDA graphs, HIP graphs), written once for both
//! runtimes.
//!
//! Engines capture a whole step (every layer's forward, backward, dropout counter advances) and
//! replay it; the kernels' parameters are baked into the graph at capture, so anything that must
//! change between replays lives in device memory (the Philox counter of
//! [`PhiloxGenerator::device`](crate::PhiloxGenerator::device)).
use crate::device::{Device, Stream};
use crate::driver::GraphHandle;
use crate::error::{Error, Result};

/// An instantiated graph of captured stream work; destroyed on drop.
pub struct Graph {
    device: Device,
    exec: GraphHandle,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("exec", &format_args!("{:#x}", self.exec))
            .finish()
    }
}

impl Stream {
    /// Captures the work `f` enqueues on this stream into a [`Graph`] instead of running it.
    ///
    /// Capture is in relaxed mode. The stream must be one made by
    /// [`Device::new_stream`] (or the caller's own non-default stream): the default stream
    /// cannot be captured. Calls that would allocate or wait inside `f` fail: bring workspaces
    /// and outputs, and run each call once before capturing so its kernels are loaded. The
    /// capture is ended even when `f` fails, and `f`'s error is returned.
    pub fn capture(&self, f: impl FnOnce(&Stream) -> Result<()>) -> Result<Graph> {
        if self.raw() == 0 {
            return Err(Error::invalid(
                "stream",
                "a non-default stream (the default stream cannot be captured)",
                "the default stream",
            ));
        }
        let b = self.device().backend();
        // SAFETY: a non-default stream of this device; a capture in progress makes this fail.
        unsafe { b.capture_begin(self.raw())? };
        let ran = f(self);
        // SAFETY: the capture was begun above on this stream.
        let ended = unsafe { b.capture_end(self.raw()) };
        match (ran, ended) {
            (Ok(()), Ok(exec)) => Ok(Graph {
                device: self.device().clone(),
                exec,
            }),
            (Err(e), Ok(exec)) => {
                // SAFETY: just instantiated, never launched.
                let _ = unsafe { b.graph_destroy(exec) };
                Err(e)
            }
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        }
    }
}

impl Graph {
    /// Enqueues one replay of the captured work on `stream` (of the same device).
    ///
    /// # Safety
    /// Every device address the captured calls used must still be valid for the accesses they
    /// make (the graph holds raw addresses, not the buffers).
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        // SAFETY: `exec` is live (we own it); the caller guarantees the addresses.
        unsafe { self.device.backend().graph_launch(self.exec, stream.raw()) }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: we own `exec` and nothing uses it after this.
        let _ = unsafe { self.device.backend().graph_destroy(self.exec) };
    }
}

//! `hipError_t` names without the runtime, and the library-loading error.
use std::fmt;

/// Every `hipError_t` enumerator of the header (aliases such as `hipErrorMemoryAllocation = 2`
/// map to the name `hipGetErrorName` returns, as in ROCm/clr `hipamd/src/hip_error.cpp`).
const ERROR_NAMES: &[(i32, &str)] = &[
    (0, "hipSuccess"),
    (1, "hipErrorInvalidValue"),
    (2, "hipErrorOutOfMemory"),
    (3, "hipErrorNotInitialized"),
    (4, "hipErrorDeinitialized"),
    (5, "hipErrorProfilerDisabled"),
    (6, "hipErrorProfilerNotInitialized"),
    (7, "hipErrorProfilerAlreadyStarted"),
    (8, "hipErrorProfilerAlreadyStopped"),
    (9, "hipErrorInvalidConfiguration"),
    (12, "hipErrorInvalidPitchValue"),
    (13, "hipErrorInvalidSymbol"),
    (17, "hipErrorInvalidDevicePointer"),
    (21, "hipErrorInvalidMemcpyDirection"),
    (35, "hipErrorInsufficientDriver"),
    (52, "hipErrorMissingConfiguration"),
    (53, "hipErrorPriorLaunchFailure"),
    (98, "hipErrorInvalidDeviceFunction"),
    (100, "hipErrorNoDevice"),
    (101, "hipErrorInvalidDevice"),
    (200, "hipErrorInvalidImage"),
    (201, "hipErrorInvalidContext"),
    (202, "hipErrorContextAlreadyCurrent"),
    (205, "hipErrorMapFailed"),
    (206, "hipErrorUnmapFailed"),
    (207, "hipErrorArrayIsMapped"),
    (208, "hipErrorAlreadyMapped"),
    (209, "hipErrorNoBinaryForGpu"),
    (210, "hipErrorAlreadyAcquired"),
    (211, "hipErrorNotMapped"),
    (212, "hipErrorNotMappedAsArray"),
    (213, "hipErrorNotMappedAsPointer"),
    (214, "hipErrorECCNotCorrectable"),
    (215, "hipErrorUnsupportedLimit"),
    (216, "hipErrorContextAlreadyInUse"),
    (217, "hipErrorPeerAccessUnsupported"),
    (218, "hipErrorInvalidKernelFile"),
    (219, "hipErrorInvalidGraphicsContext"),
    (300, "hipErrorInvalidSource"),
    (301, "hipErrorFileNotFound"),
    (302, "hipErrorSharedObjectSymbolNotFound"),
    (303, "hipErrorSharedObjectInitFailed"),
    (304, "hipErrorOperatingSystem"),
    (400, "hipErrorInvalidHandle"),
    (401, "hipErrorIllegalState"),
    (500, "hipErrorNotFound"),
    (600, "hipErrorNotReady"),
    (700, "hipErrorIllegalAddress"),
    (701, "hipErrorLaunchOutOfResources"),
    (702, "hipErrorLaunchTimeOut"),
    (704, "hipErrorPeerAccessAlreadyEnabled"),
    (705, "hipErrorPeerAccessNotEnabled"),
    (708, "hipErrorSetOnActiveProcess"),
    (709, "hipErrorContextIsDestroyed"),
    (710, "hipErrorAssert"),
    (712, "hipErrorHostMemoryAlreadyRegistered"),
    (713, "hipErrorHostMemoryNotRegistered"),
    (719, "hipErrorLaunchFailure"),
    (720, "hipErrorCooperativeLaunchTooLarge"),
    (801, "hipErrorNotSupported"),
    (900, "hipErrorStreamCaptureUnsupported"),
    (901, "hipErrorStreamCaptureInvalidated"),
    (902, "hipErrorStreamCaptureMerge"),
    (903, "hipErrorStreamCaptureUnmatched"),
    (904, "hipErrorStreamCaptureUnjoined"),
    (905, "hipErrorStreamCaptureIsolation"),
    (906, "hipErrorStreamCaptureImplicit"),
    (907, "hipErrorCapturedEvent"),
    (908, "hipErrorStreamCaptureWrongThread"),
    (910, "hipErrorGraphExecUpdateFailure"),
    (911, "hipErrorInvalidChannelDescriptor"),
    (912, "hipErrorInvalidTexture"),
    (914, "hipErrorInvalidResourceType"),
    (915, "hipErrorInvalidResourceConfiguration"),
    (916, "hipErrorStreamDetached"),
    (999, "hipErrorUnknown"),
    (1052, "hipErrorRuntimeMemory"),
    (1053, "hipErrorRuntimeOther"),
    (1054, "hipErrorInvalidClusterSize"),
];

/// The header's name for a `hipError_t` value, without calling the runtime; `None` for values the
/// header does not define.
pub fn error_name(code: i32) -> Option<&'static str> {
    ERROR_NAMES
        .binary_search_by_key(&code, |&(c, _)| c)
        .ok()
        .map(|i| ERROR_NAMES[i].1)
}

/// Why [`crate::Hip::load`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The library names and paths passed to `dlopen`, in order.
    pub tried: Vec<String>,
    /// The last `dlerror` message (or symbol-lookup error).
    pub last_error: String,
    /// The required symbol that was missing, when a library opened but lacked one.
    pub missing_symbol: Option<&'static str>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.missing_symbol {
            Some(sym) => write!(
                f,
                "HIP runtime library lacks symbol {sym} (tried: {}): {}",
                self.tried.join(", "),
                self.last_error
            ),
            None => write!(
                f,
                "HIP runtime library not found (tried: {}): {}",
                self.tried.join(", "),
                self.last_error
            ),
        }
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(ERROR_NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn names() {
        assert_eq!(error_name(0), Some("hipSuccess"));
        assert_eq!(error_name(1), Some("hipErrorInvalidValue"));
        assert_eq!(error_name(2), Some("hipErrorOutOfMemory"));
        assert_eq!(error_name(100), Some("hipErrorNoDevice"));
        assert_eq!(error_name(209), Some("hipErrorNoBinaryForGpu"));
        assert_eq!(error_name(400), Some("hipErrorInvalidHandle"));
        assert_eq!(error_name(500), Some("hipErrorNotFound"));
        assert_eq!(error_name(719), Some("hipErrorLaunchFailure"));
        assert_eq!(error_name(999), Some("hipErrorUnknown"));
        assert_eq!(error_name(10), None);
        assert_eq!(error_name(-1), None);
        assert_eq!(
            crate::hipError_t::NO_DEVICE.static_name(),
            Some("hipErrorNoDevice")
        );
        assert_eq!(
            crate::hipError_t::NO_BINARY_FOR_GPU.static_name(),
            Some("hipErrorNoBinaryForGpu")
        );
    }

    #[test]
    fn every_named_constant_is_in_the_table() {
        use crate::hipError_t as E;
        for e in [
            E::SUCCESS,
            E::INVALID_VALUE,
            E::OUT_OF_MEMORY,
            E::NOT_INITIALIZED,
            E::INVALID_DEVICE_FUNCTION,
            E::NO_DEVICE,
            E::INVALID_DEVICE,
            E::INVALID_IMAGE,
            E::NO_BINARY_FOR_GPU,
            E::NOT_FOUND,
            E::NOT_READY,
            E::ILLEGAL_ADDRESS,
            E::LAUNCH_OUT_OF_RESOURCES,
            E::LAUNCH_FAILURE,
            E::NOT_SUPPORTED,
            E::UNKNOWN,
        ] {
            assert!(e.static_name().is_some(), "{e:?}");
        }
    }

    #[test]
    fn display() {
        let e = LoadError {
            tried: vec!["a.so".into(), "b.so".into()],
            last_error: "b.so: cannot open shared object file".into(),
            missing_symbol: None,
        };
        assert_eq!(
            e.to_string(),
            "HIP runtime library not found (tried: a.so, b.so): b.so: cannot open shared object file"
        );
    }
}

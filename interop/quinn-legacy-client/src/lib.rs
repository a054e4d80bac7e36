//! Shared code of the legacy interop client and its stand-in router: the wire format.
pub mod wire;

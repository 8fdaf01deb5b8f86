//! TLS for outgoing HTTPS (CLI to a remote gateway, git over https): rustls with the ring
//! provider, which the process installs once before it builds any HTTP client.

use std::sync::Once;

/// Installs the ring crypto provider as the process default. Idempotent; call it before
/// building a `reqwest::Client` (which panics without a provider).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

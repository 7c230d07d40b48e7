//! SIGINT and SIGTERM before the server serves.
//!
//! From the first step of `serve`, a signal only raises a flag, which
//! startup reads between its steps (after the store opens, between the demo
//! tenants and between the hours it seeds): startup stops at the next step,
//! and the server stops as soon as it starts, through the same drain and
//! flush as any stop, instead of dying mid-write by the default action. A
//! second signal while the first is pending ends the process at once (the
//! default action), for a startup that hangs. Once the server's own handler
//! listens (`app::stop_on_signal`), [`Early::hand_over`] lets go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

pub(crate) struct Early {
    raised: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl Early {
    /// Listens for SIGINT and SIGTERM. Fails only where the process cannot
    /// handle signals at all.
    pub(crate) fn listen() -> std::io::Result<Early> {
        let raised = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            // The order matters: the first action sees the flag as it was
            // before this signal, so only a second signal ends the process.
            ids.push(signal_hook::flag::register_conditional_default(
                signal,
                raised.clone(),
            )?);
            ids.push(signal_hook::flag::register(signal, raised.clone())?);
        }
        Ok(Early { raised, ids })
    }

    /// Whether a stop signal has arrived.
    pub(crate) fn raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// Stops listening (the server's handler listens by now) and says
    /// whether a signal came before.
    pub(crate) fn hand_over(self) -> bool {
        for &id in &self.ids {
            signal_hook::low_level::unregister(id);
        }
        self.raised()
    }
}

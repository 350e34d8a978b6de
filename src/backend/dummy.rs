//! The `dummy` backend: logs every flow event at info level (as the Python flowd's dummy).
//!
//! Useful to see what plugins produce without sending anything. No I/O besides logging.

use crate::backend::BackendError;
use crate::context::Context;
use crate::flow::FlowEvent;

/// The dummy backend (stateless).
pub(crate) struct Dummy;

impl Dummy {
    /// Logs the event.
    pub(crate) fn handle(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<(), BackendError> {
        let (e, a) = cx.registry.names(ev.exp, ev.act);
        log::info!("flow {} {} exp={}({}) act={}({})", ev.state, ev.key, ev.exp, e.unwrap_or("?"), ev.act, a.unwrap_or("?"));
        Ok(())
    }
}

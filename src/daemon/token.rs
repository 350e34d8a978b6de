//! The one place that knows how `mio::Token` numbers map to event sources.

use mio::Token;

/// The signalfd.
pub(crate) const SIGNALS: Token = Token(0);
/// The waker used by helper threads (registry refresh).
pub(crate) const WAKER: Token = Token(1);
/// The metrics HTTP listener.
pub(crate) const HTTP_LISTENER: Token = Token(2);
/// The enrichment layer's sockets (sock_diag dump, STUN probes), all under one token:
/// on readiness each is read until `WouldBlock`.
pub(crate) const ENRICH: Token = Token(3);
/// First plugin token: `Token(PLUGIN_BASE + index into Daemon::plugins)`.
pub(crate) const PLUGIN_BASE: usize = 0x100;
/// First HTTP connection token: `Token(HTTP_CONN_BASE + connection slot)`.
pub(crate) const HTTP_CONN_BASE: usize = 0x1_0000;
/// First token of a plugin's own connections (the api plugin's HTTP clients):
/// `Token(PLUGIN_CONN_BASE + plugin index * PLUGIN_CONN_SPAN + connection slot)`.
pub(crate) const PLUGIN_CONN_BASE: usize = 0x100_0000;
/// Connection tokens per plugin.
pub(crate) const PLUGIN_CONN_SPAN: usize = 0x1_0000;

/// What a token refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The signalfd.
    Signals,
    /// The waker.
    Waker,
    /// The HTTP listener.
    HttpListener,
    /// The enrichment layer.
    Enrich,
    /// Plugin number n.
    Plugin(usize),
    /// HTTP connection in slot n.
    HttpConn(usize),
    /// Plugin number n's connection in slot m.
    PluginConn(usize, usize),
    /// Nothing we registered.
    Unknown,
}

impl From<Token> for Slot {
    fn from(Token(t): Token) -> Slot {
        match t {
            0 => Slot::Signals,
            1 => Slot::Waker,
            2 => Slot::HttpListener,
            3 => Slot::Enrich,
            t if t >= PLUGIN_CONN_BASE => Slot::PluginConn((t - PLUGIN_CONN_BASE) / PLUGIN_CONN_SPAN, (t - PLUGIN_CONN_BASE) % PLUGIN_CONN_SPAN),
            t if t >= HTTP_CONN_BASE => Slot::HttpConn(t - HTTP_CONN_BASE),
            t if t >= PLUGIN_BASE => Slot::Plugin(t - PLUGIN_BASE),
            _ => Slot::Unknown,
        }
    }
}

/// The token of plugin `i`.
pub(crate) fn plugin(i: usize) -> Token {
    Token(PLUGIN_BASE + i)
}

/// The first connection token of the plugin whose own token is `t` (slot `s` is this + s).
pub(crate) fn plugin_conn_base(Token(t): Token) -> usize {
    PLUGIN_CONN_BASE + t.saturating_sub(PLUGIN_BASE) * PLUGIN_CONN_SPAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_round_trip() {
        assert_eq!(Slot::from(SIGNALS), Slot::Signals);
        assert_eq!(Slot::from(plugin(3)), Slot::Plugin(3));
        assert_eq!(Slot::from(ENRICH), Slot::Enrich);
        assert_eq!(Slot::from(Token(HTTP_CONN_BASE + 7)), Slot::HttpConn(7));
        assert_eq!(Slot::from(Token(50)), Slot::Unknown);
        assert_eq!(Slot::from(Token(plugin_conn_base(plugin(2)) + 63)), Slot::PluginConn(2, 63));
        assert_eq!(Slot::from(Token(plugin_conn_base(plugin(0)))), Slot::PluginConn(0, 0));
    }
}

//! The one place that knows how `mio::Token` numbers map to event sources.

use mio::Token;

/// The signalfd.
pub const SIGNALS: Token = Token(0);
/// The waker used by helper threads (registry refresh).
pub const WAKER: Token = Token(1);
/// The metrics HTTP listener.
pub const HTTP_LISTENER: Token = Token(2);
/// The enrichment layer's sockets (sock_diag dump, STUN probes), all under one token:
/// on readiness each is read until `WouldBlock`.
pub const ENRICH: Token = Token(3);
/// First plugin token: `Token(PLUGIN_BASE + index into Daemon::plugins)`.
pub const PLUGIN_BASE: usize = 0x100;
/// First HTTP connection token: `Token(HTTP_CONN_BASE + connection slot)`.
pub const HTTP_CONN_BASE: usize = 0x1_0000;

/// What a token refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
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
            t if t >= HTTP_CONN_BASE => Slot::HttpConn(t - HTTP_CONN_BASE),
            t if t >= PLUGIN_BASE => Slot::Plugin(t - PLUGIN_BASE),
            _ => Slot::Unknown,
        }
    }
}

/// The token of plugin `i`.
pub fn plugin(i: usize) -> Token {
    Token(PLUGIN_BASE + i)
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
    }
}

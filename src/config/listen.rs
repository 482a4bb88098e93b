//! `api.listen`: an IP address and port, or a host name and port resolved when the
//! config is loaded (`localhost:9360` is the loopback address without a lookup).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer};

/// Why an `api.listen` value is not an address to listen on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error("`{0}` is not host:port (e.g. 127.0.0.1:9360 or localhost:9360)")]
    NotHostPort(String),
    #[error("`{text}`: the port must be a number from 0 to 65535")]
    Port { text: String },
    #[error("cannot resolve host `{host}`: {reason}")]
    Unresolved { host: String, reason: String },
}

/// Resolves `host:port` to the one address to bind. A name with several addresses
/// gets its first IPv4 one, the family every mesura example and client uses.
pub fn resolve(text: &str) -> Result<SocketAddr, ListenError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| ListenError::NotHostPort(text.to_owned()))?;
    let port: u16 = port.parse().map_err(|_| ListenError::Port { text: text.to_owned() })?;
    // `localhost` means loopback whatever /etc/hosts or a resolver says.
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let unresolved = |reason: String| ListenError::Unresolved {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| unresolved("the name has no address".into()))
}

/// `deserialize_with` for `api.listen`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    resolve(&text).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional address written the same way (a `dsmr`
/// device's `serve:`), with `#[serde(default)]` for when it is left out.
pub fn deserialize_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_resolve() {
        assert_eq!(resolve("127.0.0.1:9360"), Ok(SocketAddr::from(([127, 0, 0, 1], 9360))));
        assert_eq!(resolve("[::1]:9360").map(|a| a.ip().is_loopback()), Ok(true));
        assert_eq!(resolve("localhost:9361"), Ok(SocketAddr::from(([127, 0, 0, 1], 9361))));
        assert_eq!(resolve("LocalHost:1"), Ok(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert!(matches!(resolve("9360"), Err(ListenError::NotHostPort(_))));
        assert!(matches!(resolve(":9360"), Err(ListenError::NotHostPort(_))));
        assert!(matches!(resolve("localhost:http"), Err(ListenError::Port { .. })));
        // `.invalid` never resolves (RFC 6761).
        assert!(matches!(
            resolve("nowhere.invalid:9360"),
            Err(ListenError::Unresolved { .. })
        ));
    }
}

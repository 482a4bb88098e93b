//! DNS rebinding: a web page on `evil.example` whose name its owner points at
//! 127.0.0.1 makes the browser send the page's requests to the API, with
//! `Host: evil.example`. An API on loopback therefore answers only requests that
//! name it as `localhost`, a loopback address, or a host the user listed in
//! `api.allowed_hosts`; the rest get 421.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::bad_request;
use super::errors::echo;

/// Which `Host` values the API answers.
#[derive(Debug, Clone)]
pub(super) struct HostPolicy {
    /// False: every host (an API on a LAN address with no `allowed_hosts`).
    checked: bool,
    /// Bound to loopback: only loopback addresses pass as IP literals.
    loopback: bool,
    /// `api.allowed_hosts`, lower case, without a trailing dot.
    allowed: Vec<String>,
}

impl HostPolicy {
    pub(super) fn new(bound: IpAddr, allowed_hosts: &[String]) -> HostPolicy {
        let loopback = bound.is_loopback();
        HostPolicy {
            checked: loopback || !allowed_hosts.is_empty(),
            loopback,
            allowed: allowed_hosts.iter().map(|h| normalise(h)).collect(),
        }
    }

    /// Whether a request with this `Host` header value is answered.
    pub(super) fn allows(&self, host_header: &str) -> bool {
        if !self.checked {
            return true;
        }
        let Some(name) = host_name(host_header) else {
            return false;
        };
        let name = normalise(name);
        if name == "localhost" || self.allowed.contains(&name) {
            return true;
        }
        // An address is not a name an attacker controls: on a LAN address the
        // API is reached by its address; on loopback only a loopback one is real.
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || !self.loopback,
            Err(_) => false,
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `Host` value without its port: `localhost:9360` → `localhost`,
/// `[::1]:9360` → `::1`. `None` when it is not a well-formed host.
fn host_name(value: &str) -> Option<&str> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after)
        }
        None => match value.rsplit_once(':') {
            Some((host, _)) => (host, &value[host.len()..]),
            None => (value, ""),
        },
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !host.is_empty()).then_some(host)
}

/// The middleware: refuses a request whose `Host` (or absolute URI) names a host
/// the policy does not allow. A request without `Host` (HTTP/1.0 from a script)
/// passes: a browser always sends one.
pub(super) async fn check_host(State(policy): State<Arc<HostPolicy>>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let authority = request.uri().authority().map(|a| a.as_str());
    if let Some(refused) = [header, authority].into_iter().flatten().find(|h| !policy.allows(h)) {
        return bad_request(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "host `{}` is not served here: use localhost or 127.0.0.1, or add the name to api.allowed_hosts",
                echo(refused)
            ),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(allowed: &[&str]) -> HostPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        HostPolicy::new("127.0.0.1".parse().unwrap(), &allowed)
    }

    #[test]
    fn on_loopback_only_loopback_names_and_listed_hosts_pass() {
        let policy = loopback(&["Grafana.Home.Arpa."]);
        for host in [
            "localhost",
            "LOCALHOST:9360",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:9360",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9360",
            "grafana.home.arpa:9360",
        ] {
            assert!(policy.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9360",
            "localhost.evil.example",
            "192.168.1.5:9360",
            "[::2]:9360",
            "::1",
            "localhost:http",
            "[::1",
            "",
            ":9360",
        ] {
            assert!(!policy.allows(host), "{host}");
        }
    }

    #[test]
    fn on_a_lan_address_hosts_are_checked_only_when_listed() {
        let open = HostPolicy::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(open.allows("evil.example"));
        let listed = HostPolicy::new("0.0.0.0".parse().unwrap(), &["pi.home.arpa".into()]);
        assert!(listed.allows("pi.home.arpa:9360"));
        assert!(listed.allows("192.168.1.5:9360"));
        assert!(listed.allows("localhost"));
        assert!(!listed.allows("evil.example"));
    }
}

//! systemd's notify protocol (sd_notify), without libsystemd: `READY=1` once the
//! config is loaded and the backends are open, `STATUS=` lines, and `WATCHDOG=1`
//! pings. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                // An abstract socket (Linux): the name follows a NUL byte.
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = name;
                    None
                }
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()
            }?;
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier { socket }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// Half of `WATCHDOG_USEC` when systemd asks for pings (and the pings are for
    /// this process, per `WATCHDOG_PID`).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

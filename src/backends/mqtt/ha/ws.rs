//! Home Assistant's websocket API as a client: connect (ws or wss), authenticate
//! with a long-lived token, and send one command at a time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocols::ha_statistics::{self, Incoming};
use crate::protocols::websocket::{self, Opcode, WsError};

/// How long one command (or the handshake) may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum HaError {
    #[error("Home Assistant's url {url}: {message}")]
    Url { url: String, message: String },
    #[error("cannot connect to Home Assistant at {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to Home Assistant")]
    Tls(#[source] std::io::Error),
    #[error("Home Assistant's websocket")]
    Socket(#[source] WsError),
    #[error("reading from or writing to Home Assistant")]
    Io(#[source] std::io::Error),
    #[error("Home Assistant refused the token ({0}): check homeassistant.statistics.token")]
    Auth(String),
    #[error("Home Assistant closed the websocket")]
    Closed,
    #[error("a message from Home Assistant is not the JSON expected")]
    Json(#[source] serde_json::Error),
    #[error("Home Assistant refused {command}: {message}")]
    Command { command: String, message: String },
    #[error("no answer from Home Assistant within {0:?}")]
    Timeout(Duration),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct HaSocket {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    next_id: u64,
}

impl std::fmt::Debug for HaSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaSocket")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

/// Where the websocket is for a Home Assistant url (`http://host:8123`,
/// `https://…`, or `ws://…/api/websocket`): (tls, host, port, path).
pub fn endpoint(url: &str) -> Result<(bool, String, u16, String), HaError> {
    let bad = |message: &str| HaError::Url {
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let tls = match parsed.scheme() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        other => return Err(bad(&format!("scheme {other} is not http, https, ws or wss"))),
    };
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let mut path = parsed.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/api/websocket") {
        path.push_str("/api/websocket");
    }
    Ok((tls, host, port, path))
}

impl HaSocket {
    /// Connects and authenticates.
    pub async fn connect(url: &str, token: &str) -> Result<HaSocket, HaError> {
        tokio::time::timeout(ANSWER_TIMEOUT, Self::open(url, token))
            .await
            .map_err(|_| HaError::Timeout(ANSWER_TIMEOUT))?
    }

    async fn open(url: &str, token: &str) -> Result<HaSocket, HaError> {
        let (tls, host, port, path) = endpoint(url)?;
        let address = format!("{host}:{port}");
        let tcp = TcpStream::connect(&address).await.map_err(|source| HaError::Connect {
            address: address.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if tls {
            Box::new(tls_connect(tcp, &host).await?)
        } else {
            Box::new(tcp)
        };
        let mut socket = HaSocket {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        let key = websocket::handshake_key(fastrand::u128(..).to_le_bytes());
        let default_port = if tls { 443 } else { 80 };
        let host_header = if port == default_port { host.clone() } else { address };
        socket
            .stream
            .write_all(websocket::handshake_request(&host_header, &path, &key).as_bytes())
            .await
            .map_err(HaError::Io)?;
        loop {
            if let Some(head) = websocket::handshake_response(&socket.buf, &key).map_err(HaError::Socket)? {
                socket.buf.drain(..head);
                break;
            }
            socket.fill().await?;
        }
        loop {
            match socket.incoming().await? {
                Incoming::AuthRequired => socket.send_text(&ha_statistics::auth(token)).await?,
                Incoming::AuthOk => return Ok(socket),
                Incoming::AuthInvalid(message) => return Err(HaError::Auth(message)),
                _ => {}
            }
        }
    }

    async fn fill(&mut self) -> Result<(), HaError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.map_err(HaError::Io)?;
        if n == 0 {
            return Err(HaError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn send_text(&mut self, text: &str) -> Result<(), HaError> {
        let frame = websocket::encode_frame(Opcode::Text, text.as_bytes(), fastrand::u32(..).to_le_bytes());
        self.stream.write_all(&frame).await.map_err(HaError::Io)
    }

    /// The next whole text message (answering pings on the way).
    async fn message(&mut self) -> Result<String, HaError> {
        let mut message: Vec<u8> = Vec::new();
        loop {
            let Some((frame, used)) = websocket::decode_frame(&self.buf).map_err(HaError::Socket)? else {
                self.fill().await?;
                continue;
            };
            self.buf.drain(..used);
            match frame.opcode {
                Opcode::Ping => {
                    let pong = websocket::encode_frame(Opcode::Pong, &frame.payload, fastrand::u32(..).to_le_bytes());
                    self.stream.write_all(&pong).await.map_err(HaError::Io)?;
                }
                Opcode::Pong => {}
                Opcode::Close => return Err(HaError::Closed),
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    message.extend_from_slice(&frame.payload);
                    if message.len() > websocket::MAX_MESSAGE {
                        return Err(HaError::Socket(WsError::TooLarge(message.len() as u64)));
                    }
                    if frame.fin {
                        return Ok(String::from_utf8_lossy(&message).into_owned());
                    }
                }
            }
        }
    }

    async fn incoming(&mut self) -> Result<Incoming, HaError> {
        let text = self.message().await?;
        ha_statistics::parse(&text).map_err(HaError::Json)
    }

    /// A fresh command id.
    pub fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a command built for `id` and waits for its result.
    pub async fn command(&mut self, id: u64, what: &str, text: &str) -> Result<Json, HaError> {
        self.send_text(text).await?;
        let answer = async {
            loop {
                if let Incoming::Result { id: got, outcome } = self.incoming().await? {
                    if got == id {
                        return outcome.map_err(|message| HaError::Command {
                            command: what.to_owned(),
                            message,
                        });
                    }
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| HaError::Timeout(ANSWER_TIMEOUT))?
    }

    /// Sends a JSON command (its `id` is set here) and waits for its result.
    pub async fn call(&mut self, mut command: Json) -> Result<Json, HaError> {
        let id = self.id();
        command["id"] = Json::from(id);
        let what = command["type"].as_str().unwrap_or("a command").to_owned();
        self.command(id, &what, &command.to_string()).await
    }
}

async fn tls_connect(tcp: TcpStream, host: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HaError::Tls(std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| HaError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(HaError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lead_to_the_websocket() {
        assert_eq!(
            endpoint("http://127.0.0.1:8123").expect("ok"),
            (false, "127.0.0.1".into(), 8123, "/api/websocket".into())
        );
        assert_eq!(
            endpoint("https://ha.example.org/").expect("ok"),
            (true, "ha.example.org".into(), 443, "/api/websocket".into())
        );
        assert_eq!(
            endpoint("ws://h:1/api/websocket").expect("ok").3,
            "/api/websocket".to_owned()
        );
        assert!(matches!(endpoint("ftp://h"), Err(HaError::Url { .. })));
    }
}

//! A real Mosquitto broker on a free loopback port, started and stopped by tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("mosquitto is not installed: scripts/test.sh installs it (apt-get install mosquitto)");
}

pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker with persistence in `dir`; `extra` is appended to the listener config.
    pub fn start(dir: &Path, listener_extra: &str, global_extra: &str) -> Broker {
        let port = free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let text = format!(
            "# Started as root, mosquitto would switch to its own user, which cannot read\n# the test's private tempdir; ignored when not root.\nuser root\npersistence true\npersistence_location {}/\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type error\n{global_extra}\nlistener {port} 127.0.0.1\n{listener_extra}\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("mosquitto.conf");
        let mut broker = Broker {
            port,
            conf,
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn restart(&mut self) {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not start listening on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, so the broker saves its sessions to disk, like a service restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// A subscriber on a persistent session, recording every message it receives.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Message>>>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(port: u16, client_id: &str, credentials: Option<(&str, &str)>, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let sub_client = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub_client.subscribe(&filter, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().expect("lock").push(Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscribed in time")
            .expect("subscribed");
        Subscriber { messages, client, task }
    }

    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().expect("lock").clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy in front of a broker that holds back the broker's first answer on each
/// connection (its CONNACK) for `delay`, as a remote or TLS broker answers late, and
/// counts the connections made through it.
pub struct SlowConnAckProxy {
    pub port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowConnAckProxy {
    pub async fn start(broker_port: u16, delay: Duration) -> SlowConnAckProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(relay(client, broker_port, delay));
            }
        });
        SlowConnAckProxy {
            port,
            connections,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SlowConnAckProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: tokio::net::TcpStream, broker_port: u16, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_broker, mut to_broker) = broker.into_split();
    // A client that goes away without DISCONNECT must look the same to the broker
    // (it then publishes the Last Will), so each side's close is passed on.
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_broker).await;
        let _ = to_broker.shutdown().await;
    };
    let downstream = async {
        let mut first = [0u8; 4096];
        if let Ok(n @ 1..) = from_broker.read(&mut first).await {
            tokio::time::sleep(delay).await;
            if to_client.write_all(&first[..n]).await.is_ok() {
                let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

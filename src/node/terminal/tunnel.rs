//! Tunnels: TCP connections from the gateway's preview proxy to a port a terminal's
//! processes listen on, carried as `tunnel:*` frames over the node's connection.
//!
//! Only ports that a running terminal of the named binding listens on (as the last ports
//! lookup found) can be reached; the node's other loopback services cannot.
//!
//! Must not touch: HTTP (the gateway speaks it through the tunnel), the terminals' PTYs.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::protocol::terminal::{valid_terminal_id, Bytes64, MAX_OUTPUT_CHUNK};
use crate::protocol::Frame;

/// Bytes from the gateway for one tunnel; None closes it.
type Inbox = mpsc::UnboundedSender<Option<Vec<u8>>>;

#[derive(Default)]
pub struct Tunnels {
    open: std::sync::Arc<Mutex<HashMap<String, Inbox>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tunnels {
    /// Connects to `port` and pumps both ways; what the port sends goes out on `queue`.
    pub fn open(&self, tunnel_id: String, port: u16, queue: mpsc::Sender<Frame>) -> Option<Frame> {
        if !valid_terminal_id(&tunnel_id) {
            return Some(close(tunnel_id, Some("bad tunnel id".into())));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.open).insert(tunnel_id.clone(), tx);
        let open = self.open.clone();
        tokio::spawn(async move {
            let error = pump(&tunnel_id, port, &mut rx, &queue).await.err();
            lock(&open).remove(&tunnel_id);
            let _ = queue.send(close(tunnel_id, error)).await;
        });
        None
    }

    pub fn data(&self, tunnel_id: &str, data: Vec<u8>) {
        if let Some(tx) = lock(&self.open).get(tunnel_id) {
            let _ = tx.send(Some(data));
        }
    }

    pub fn close(&self, tunnel_id: &str) {
        if let Some(tx) = lock(&self.open).remove(tunnel_id) {
            let _ = tx.send(None);
        }
    }

    /// The gateway went away: every tunnel ends.
    pub fn close_all(&self) {
        for (_, tx) in lock(&self.open).drain() {
            let _ = tx.send(None);
        }
    }
}

pub fn close(tunnel_id: String, error: Option<String>) -> Frame {
    Frame::TunnelClose { tunnel_id, error }
}

async fn pump(
    tunnel_id: &str,
    port: u16,
    rx: &mut mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    queue: &mpsc::Sender<Frame>,
) -> Result<(), String> {
    let stream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(_) => tokio::net::TcpStream::connect(("::1", port))
            .await
            .map_err(|e| format!("connecting to port {port}: {e}"))?,
    };
    let (mut read, mut write) = stream.into_split();
    let mut buf = vec![0u8; MAX_OUTPUT_CHUNK];
    loop {
        tokio::select! {
            n = read.read(&mut buf) => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                let frame = Frame::TunnelData {
                    tunnel_id: tunnel_id.to_string(),
                    data: Bytes64(buf[..n].to_vec()),
                };
                queue.send(frame).await.map_err(|_| "the node is shutting down".to_string())?;
            }
            data = rx.recv() => match data {
                Some(Some(bytes)) => write.write_all(&bytes).await.map_err(|e| e.to_string())?,
                Some(None) | None => return Ok(()),
            }
        }
    }
}

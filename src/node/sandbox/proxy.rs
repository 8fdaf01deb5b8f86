//! The allowlist proxy: an HTTP proxy on a unix socket that a sandbox with
//! `networkAccess: allowlist` reaches (through `forward.rs` inside it). It allows `CONNECT
//! host:port` (https and anything tunnelled) and plain `http://` requests only to hosts the
//! task's allowlist names, and answers anything else with 403 and a message that says why.
//!
//! A listed name that resolves to a loopback, private or link-local address is refused
//! unless the allowlist names that address itself or the node maps the name with
//! `--proxy-resolve` (so a listed public name cannot be pointed at the node's own services).
//! One proxy per process tree, stopped when its handle is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::Allowlist;

/// Most bytes of a request head before the proxy gives up on it.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long resolving a name, and connecting to each of its addresses, may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Proxy {
    socket: PathBuf,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct Rules {
    allow: Arc<Allowlist>,
    resolve: HashMap<String, IpAddr>,
}

impl Proxy {
    /// Listens on a new socket in `dir` (the node's private run dir).
    pub fn start(
        dir: &Path,
        allow: Arc<Allowlist>,
        resolve: HashMap<String, IpAddr>,
    ) -> anyhow::Result<Proxy> {
        let socket = dir.join(format!("proxy-{:016x}.sock", crate::crypto::random_u64()));
        let listener = UnixListener::bind(&socket)?;
        let stop = CancellationToken::new();
        let rules = Arc::new(Rules { allow, resolve });
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    conn = listener.accept() => match conn {
                        Ok((conn, _)) => {
                            let (rules, s) = (rules.clone(), s.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = s.cancelled() => {}
                                    _ = serve(conn, &rules) => {}
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "allowlist proxy: accept failed");
                            return;
                        }
                    }
                }
            }
        });
        Ok(Proxy { socket, stop })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// One client connection: read the request head, decide, then tunnel or forward.
async fn serve(mut conn: UnixStream, rules: &Rules) {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => return refuse(&mut conn, 400, &why).await,
        Err(_) => return refuse(&mut conn, 408, "no request head within 30 s").await,
    };
    let Some(req) = Request::parse(&head) else {
        return refuse(&mut conn, 400, "not an HTTP proxy request").await;
    };
    let addrs = match rules.decide(&req.host, req.port).await {
        Ok(a) => a,
        Err(why) => {
            tracing::info!(host = %req.host, port = req.port, "allowlist proxy refused a request");
            return refuse(&mut conn, 403, &why).await;
        }
    };
    let mut upstream = None;
    let mut last_error = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(u)) => {
                upstream = Some(u);
                break;
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "timed out".into(),
        }
    }
    let Some(mut upstream) = upstream else {
        let why = format!("cannot connect to {}:{}: {last_error}", req.host, req.port);
        return refuse(&mut conn, 502, &why).await;
    };
    if req.connect {
        if conn
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(&req.origin_form(&head)).await.is_err() {
        return;
    }
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}

async fn read_head(conn: &mut UnixStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("connection closed before the request head".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn refuse(conn: &mut UnixStream, status: u16, why: &str) {
    let reason = match status {
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        _ => "Bad Request",
    };
    let body = format!("viber: {why}\n");
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// The parts of a proxy request the proxy needs.
#[derive(Debug, PartialEq)]
struct Request {
    connect: bool,
    host: String,
    port: u16,
    /// For plain HTTP: the path and query to send upstream.
    path: String,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let line = text.lines().next()?;
        let mut parts = line.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if !version.starts_with("HTTP/1.") || parts.next().is_some() {
            return None;
        }
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(target)?;
            return Some(Request {
                connect: true,
                host,
                port: port?,
                path: String::new(),
            });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority)?;
        Some(Request {
            connect: false,
            host,
            port: port.unwrap_or(80),
            path: path.to_string(),
        })
    }

    /// The head to send to the origin: the request line in origin form, the proxy's own
    /// headers dropped, and one request per connection.
    fn origin_form(&self, head: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut words = first.split(' ');
        let method = words.next().unwrap_or("GET");
        let version = words.nth(1).unwrap_or("HTTP/1.1");
        let mut out = format!("{method} {} {version}\r\n", self.path);
        for l in lines.filter(|l| !l.is_empty()) {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if name.starts_with("proxy-") || name == "connection" {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// `host[:port]`, lowercased, with IPv6 literals in brackets.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some((host, port))
}

/// Whether `pattern` (`host`, `*.domain`, either with `:port`) allows `host:port`.
pub fn matches(pattern: &str, host: &str, port: u16) -> bool {
    let (p_host, p_port) = match pattern.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse::<u16>().ok()),
        _ => (pattern, None),
    };
    if p_port.is_some_and(|p| p != port) {
        return false;
    }
    match p_host.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => p_host == host,
    }
}

impl Rules {
    /// The address to connect to, or why not.
    /// The addresses to try, in order, or why not.
    async fn decide(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        self.allow.allows(host, port).await?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.resolve.get(host) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("resolving {host} timed out"))?
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .filter(|a| public(a.ip()) || self.allow.names_address(a.ip(), port))
                .collect();
        if addrs.is_empty() {
            return Err(format!(
                "{host} resolves to a local or private address only; list that address in \
                 networkAllowlist or map the name with --proxy-resolve on the node"
            ));
        }
        Ok(addrs)
    }
}

/// Not loopback, private, link-local, unspecified or otherwise local.
fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (seg & 0xfe00) == 0xfc00
                || (seg & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| !public(IpAddr::V4(v4))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_subdomains_and_ports() {
        assert!(matches("example.com", "example.com", 443));
        assert!(!matches("example.com", "www.example.com", 443));
        assert!(matches("*.example.com", "www.example.com", 443));
        assert!(matches("*.example.com", "a.b.example.com", 80));
        assert!(!matches("*.example.com", "example.com", 443));
        assert!(!matches("*.example.com", "badexample.com", 443));
        assert!(matches("example.com:8443", "example.com", 8443));
        assert!(!matches("example.com:8443", "example.com", 443));
        assert!(matches("10.0.0.5", "10.0.0.5", 22));
    }

    #[test]
    fn requests_parse_in_both_forms() {
        let r = Request::parse(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (r.connect, r.host.as_str(), r.port),
            (true, "api.example.com", 443)
        );
        let head = b"GET http://Example.com:8080/a?b=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: x\r\nConnection: keep-alive\r\n\r\n";
        let r = Request::parse(head).unwrap();
        assert_eq!(
            (r.connect, r.host.as_str(), r.port, r.path.as_str()),
            (false, "example.com", 8080, "/a?b=1")
        );
        let out = String::from_utf8(r.origin_form(head)).unwrap();
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        assert!(Request::parse(b"GET /relative HTTP/1.1\r\n\r\n").is_none());
        assert!(Request::parse(b"CONNECT noport HTTP/1.1\r\n\r\n").is_none());
        assert!(Request::parse(b"\xff\xfe\r\n\r\n").is_none());
    }

    #[test]
    fn local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(public(ip.parse().unwrap()), "{ip}");
        }
    }
}

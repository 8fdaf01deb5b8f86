//! The framed WebSocket codec: one [`Frame`] per text message, with the size limit and typed
//! errors, for both ends of the link.
//!
//! The gateway reads and writes through axum's WebSocket, the node (and the tests and the
//! benchmarks) through tokio-tungstenite. Their message types differ, so the codec sees a
//! message through the small [`Message`] trait (a borrowed [`WsMessage`] view to read, two
//! constructors to write) and a transport error through [`TransportError`]; both libraries
//! implement them here. Everything else (what a text, binary, control or close message
//! means, how an oversized message is reported, how a close reason is cut to fit) exists
//! once, in this file.
//!
//! Owns: framing, the frame size limit of both transports, close frames. Must not touch:
//! what a frame means (the gateway's `link/` and the node's `connection` decide), the
//! handshake (`node::handshake` on the client side, `gateway::link` on the server side).
//! Like the rest of `protocol/`, it never imports `gateway::` or `node::`.

use std::fmt;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;

use super::{close, DecodeError, Frame, MAX_FRAME_BYTES};

/// The longest close reason the WebSocket protocol allows: a control frame carries at most
/// 125 bytes, two of which are the code. A peer refuses a longer one as a protocol error and
/// never sees the close code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A WebSocket message as the codec sees it, borrowed from the library that carried it (so
/// reading costs no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMessage<'a> {
    Text(&'a str),
    /// Binary data, which the protocol does not use.
    Binary,
    /// WebSocket-level ping or pong: proof of life, nothing to decode.
    Ping,
    Pong,
    /// A close frame, with its code and reason when the peer gave them.
    Close(Option<(u16, &'a str)>),
}

/// The message type of a WebSocket library, as the codec reads and builds it.
pub trait Message: Sized {
    /// What this message is.
    fn view(&self) -> WsMessage<'_>;
    /// A text message.
    fn from_text(text: String) -> Self;
    /// A close frame; `reason` is already cut to [`MAX_CLOSE_REASON_BYTES`].
    fn from_close(code: u16, reason: &str) -> Self;
}

/// The error type of a WebSocket library.
pub trait TransportError: fmt::Display {
    /// Whether the library refused a message over its size limit.
    fn is_too_big(&self) -> bool;
}

/// A close frame the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

/// Why no frame could be read or written.
#[derive(Debug)]
pub enum CodecError {
    /// The peer closed the connection: with its close code and reason when it sent a close
    /// frame that had them, `None` when the stream just ended.
    Closed(Option<CloseReason>),
    /// A message over [`MAX_FRAME_BYTES`]; the reader answers with close 1009
    /// ([`close::TOO_BIG`]).
    TooBig,
    /// A text message that is not a frame. The connection is still usable: answer with
    /// [`DecodeError::to_frame`].
    Decode(DecodeError),
    /// A binary message; the protocol speaks JSON text only. The connection is still usable.
    Binary,
    /// The transport failed (I/O, a WebSocket protocol violation, a write after close).
    Transport(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Closed(None) => write!(f, "connection closed"),
            CodecError::Closed(Some(c)) => write!(f, "closed by peer ({}: {})", c.code, c.reason),
            CodecError::TooBig => write!(f, "frame too large"),
            CodecError::Decode(e) => write!(f, "bad frame: {e}"),
            CodecError::Binary => write!(f, "binary frames are not supported; send JSON text"),
            CodecError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl CodecError {
    fn transport(e: impl TransportError) -> CodecError {
        if e.is_too_big() {
            CodecError::TooBig
        } else {
            CodecError::Transport(e.to_string())
        }
    }
}

/// What one read produced when it did not fail.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    Frame(Frame),
    /// A WebSocket ping or pong: the peer is alive, there is nothing else to do (the
    /// libraries answer pings themselves).
    Control,
}

/// Reads one message and decodes it. Cancel-safe: it awaits the stream once.
pub async fn read<S, M, E>(stream: &mut S) -> Result<Incoming, CodecError>
where
    S: Stream<Item = Result<M, E>> + Unpin,
    M: Message,
    E: TransportError,
{
    match stream.next().await {
        None => Err(CodecError::Closed(None)),
        Some(Err(e)) => Err(CodecError::transport(e)),
        Some(Ok(message)) => match message.view() {
            WsMessage::Text(text) => Frame::decode(text)
                .map(Incoming::Frame)
                .map_err(CodecError::Decode),
            WsMessage::Binary => Err(CodecError::Binary),
            WsMessage::Ping | WsMessage::Pong => Ok(Incoming::Control),
            WsMessage::Close(c) => Err(CodecError::Closed(c.map(|(code, reason)| CloseReason {
                code,
                reason: reason.to_string(),
            }))),
        },
    }
}

/// Reads the next frame, skipping control and binary messages (for a peer that has nothing
/// to say about either: the node, a test client). Cancel-safe like [`read`]: a message is
/// either returned or was one to skip.
pub async fn read_frame<S, M, E>(stream: &mut S) -> Result<Frame, CodecError>
where
    S: Stream<Item = Result<M, E>> + Unpin,
    M: Message,
    E: TransportError,
{
    loop {
        match read(stream).await {
            Ok(Incoming::Frame(frame)) => return Ok(frame),
            Ok(Incoming::Control) | Err(CodecError::Binary) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Queues a frame without flushing: for a burst, followed by [`flush`].
pub async fn feed<K, M>(sink: &mut K, frame: &Frame) -> Result<(), CodecError>
where
    K: Sink<M> + Unpin,
    K::Error: TransportError,
    M: Message,
{
    sink.feed(M::from_text(frame.encode()))
        .await
        .map_err(CodecError::transport)
}

/// Sends everything queued by [`feed`].
pub async fn flush<K, M>(sink: &mut K) -> Result<(), CodecError>
where
    K: Sink<M> + Unpin,
    K::Error: TransportError,
    M: Message,
{
    sink.flush().await.map_err(CodecError::transport)
}

/// Sends one frame now.
pub async fn write<K, M>(sink: &mut K, frame: &Frame) -> Result<(), CodecError>
where
    K: Sink<M> + Unpin,
    K::Error: TransportError,
    M: Message,
{
    write_text(sink, frame.encode()).await
}

/// Sends a text message that need not be a frame: for tests and tools that speak raw text
/// to a peer (malformed input on purpose). Everything else sends [`Frame`]s with [`write`].
pub async fn write_text<K, M>(sink: &mut K, text: String) -> Result<(), CodecError>
where
    K: Sink<M> + Unpin,
    K::Error: TransportError,
    M: Message,
{
    sink.send(M::from_text(text))
        .await
        .map_err(CodecError::transport)
}

/// Sends a close frame with `code` and (the start of) `reason`, then closes the sink. Best
/// effort: the peer may already be gone.
pub async fn close<K, M>(sink: &mut K, code: u16, reason: &str)
where
    K: Sink<M> + Unpin,
    M: Message,
{
    let _ = sink.send(M::from_close(code, close_reason(reason))).await;
    let _ = sink.close().await;
}

/// Answers an oversized message: close with 1009.
pub async fn close_too_big<K, M>(sink: &mut K)
where
    K: Sink<M> + Unpin,
    M: Message,
{
    close(sink, close::TOO_BIG, "frame too large").await
}

/// The longest prefix of `reason` that fits a close frame, cut at a character boundary.
pub fn close_reason(reason: &str) -> &str {
    crate::text::head(reason, MAX_CLOSE_REASON_BYTES)
}

/// tokio-tungstenite settings for a client: the protocol's size limit on what it reads.
pub fn client_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(READ_BUFFER)
}

/// What a socket reads into at a time. Not tungstenite's 128 KiB: the buffer is allocated and
/// filled per connection, and a gateway holds one connection per node (10,000 idle nodes
/// with 128 KiB each are 1.3 GB); a larger message still arrives whole, in more reads.
pub const READ_BUFFER: usize = 8 * 1024;

/// axum's upgrade with the protocol's size limit on what the server reads, and the read
/// buffer above.
pub fn limit_upgrade<F>(
    upgrade: axum::extract::ws::WebSocketUpgrade<F>,
) -> axum::extract::ws::WebSocketUpgrade<F> {
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER)
}

// ---- the two libraries ----

impl Message for tungstenite::Message {
    fn view(&self) -> WsMessage<'_> {
        match self {
            tungstenite::Message::Text(t) => WsMessage::Text(t.as_str()),
            // Raw frames only exist on the write side; a reader never sees one.
            tungstenite::Message::Binary(_) | tungstenite::Message::Frame(_) => WsMessage::Binary,
            tungstenite::Message::Ping(_) => WsMessage::Ping,
            tungstenite::Message::Pong(_) => WsMessage::Pong,
            tungstenite::Message::Close(c) => {
                WsMessage::Close(c.as_ref().map(|c| (u16::from(c.code), c.reason.as_str())))
            }
        }
    }

    fn from_text(text: String) -> Self {
        tungstenite::Message::text(text)
    }

    fn from_close(code: u16, reason: &str) -> Self {
        tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }
}

impl TransportError for tungstenite::Error {
    fn is_too_big(&self) -> bool {
        matches!(self, tungstenite::Error::Capacity(_))
    }
}

impl Message for axum::extract::ws::Message {
    fn view(&self) -> WsMessage<'_> {
        use axum::extract::ws::Message as M;
        match self {
            M::Text(t) => WsMessage::Text(t.as_str()),
            M::Binary(_) => WsMessage::Binary,
            M::Ping(_) => WsMessage::Ping,
            M::Pong(_) => WsMessage::Pong,
            M::Close(c) => WsMessage::Close(c.as_ref().map(|c| (c.code, c.reason.as_str()))),
        }
    }

    fn from_text(text: String) -> Self {
        axum::extract::ws::Message::Text(text.into())
    }

    fn from_close(code: u16, reason: &str) -> Self {
        axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
}

impl TransportError for axum::Error {
    fn is_too_big(&self) -> bool {
        // axum wraps the tungstenite error it runs on.
        std::error::Error::source(self)
            .and_then(|e| e.downcast_ref::<tungstenite::Error>())
            .is_some_and(TransportError::is_too_big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    type Peer = WebSocketStream<tokio::io::DuplexStream>;

    /// A connected client/server pair over an in-memory pipe, both with the codec's limits.
    async fn pair() -> (Peer, Peer) {
        let (a, b) = tokio::io::duplex(4 * MAX_FRAME_BYTES);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, Some(client_config()));
        let server = WebSocketStream::from_raw_socket(b, Role::Server, Some(client_config()));
        (client.await, server.await)
    }

    #[tokio::test]
    async fn frames_round_trip_and_bursts_flush() {
        let (mut client, mut server) = pair().await;
        write(&mut client, &Frame::Ping {}).await.unwrap();
        feed(&mut client, &Frame::Pong {}).await.unwrap();
        feed(&mut client, &Frame::Ping {}).await.unwrap();
        flush(&mut client).await.unwrap();
        for want in ["ping", "pong", "ping"] {
            assert_eq!(read_frame(&mut server).await.unwrap().type_name(), want);
        }
    }

    #[tokio::test]
    async fn errors_are_typed_and_the_connection_survives_bad_input() {
        let (mut client, mut server) = pair().await;
        write_text(&mut client, "{not json".into()).await.unwrap();
        match read(&mut server).await {
            Err(CodecError::Decode(e)) => assert_eq!(e.code(), super::super::ErrorCode::BadFrame),
            other => panic!("{other:?}"),
        }
        client
            .send(tungstenite::Message::binary(vec![1, 2, 3]))
            .await
            .unwrap();
        assert!(matches!(read(&mut server).await, Err(CodecError::Binary)));
        client
            .send(tungstenite::Message::Ping(Default::default()))
            .await
            .unwrap();
        assert!(matches!(read(&mut server).await, Ok(Incoming::Control)));
        // Binary and control messages are skipped by `read_frame`.
        client
            .send(tungstenite::Message::binary(vec![1]))
            .await
            .unwrap();
        write(&mut client, &Frame::Pong {}).await.unwrap();
        assert!(matches!(read_frame(&mut server).await, Ok(Frame::Pong {})));

        let big = "x".repeat(MAX_FRAME_BYTES + 1);
        write_text(&mut client, big).await.unwrap();
        assert!(matches!(read(&mut server).await, Err(CodecError::TooBig)));
    }

    #[tokio::test]
    async fn close_carries_code_and_reason() {
        let (mut client, mut server) = pair().await;
        // The server closes and goes away (as the gateway does); the client reads the close
        // frame, then the end.
        let closer = async move { close(&mut server, close::POLICY, "go away").await };
        let (_, (first, second)) = tokio::join!(closer, async {
            (read(&mut client).await, read(&mut client).await)
        });
        match first {
            Err(CodecError::Closed(Some(c))) => {
                assert_eq!(
                    c,
                    CloseReason {
                        code: close::POLICY,
                        reason: "go away".into()
                    }
                )
            }
            other => panic!("{other:?}"),
        }
        // The end of the stream, or a failed write of the close reply to a peer already gone.
        assert!(
            matches!(
                second,
                Err(CodecError::Closed(None) | CodecError::Transport(_))
            ),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn a_long_non_ascii_close_reason_still_arrives_as_a_close() {
        // A refusal's reason can quote the peer's input (an unknown frame type, say).
        let (mut client, mut server) = pair().await;
        let reason = format!("unknown frame type {:?}", "é".repeat(200));
        let closer = async move { close(&mut server, close::POLICY, &reason).await };
        let (_, got) = tokio::join!(closer, read(&mut client));
        match got {
            Err(CodecError::Closed(Some(c))) => {
                assert_eq!(c.code, close::POLICY);
                assert!(
                    c.reason.starts_with("unknown frame type \"é"),
                    "{}",
                    c.reason
                );
            }
            other => panic!("expected close 1008, got {other:?}"),
        }
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(close_reason("short"), "short");
        let ascii = "a".repeat(300);
        assert_eq!(close_reason(&ascii).len(), MAX_CLOSE_REASON_BYTES);
        let wide = "é".repeat(100); // 200 bytes
        let cut = close_reason(&wide);
        assert_eq!(cut.len(), MAX_CLOSE_REASON_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}

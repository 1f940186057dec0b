//! The daemon's socket protocol: one JSON object per line each way.
//!
//! Requests: `{"op":"subscribe"}` (alerts as they happen), `{"op":"status"}`,
//! `{"op":"history","since_ms":N}`. Replies: `{"type":"alert","alert":{...}}`,
//! `{"type":"status",...}`, `{"type":"history","alerts":[...]}`, `{"type":"error",...}`,
//! and `{"type":"lagged","missed":N}` when a slow subscriber missed alerts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the system service listens.
pub const DEFAULT_SOCKET: &str = "/run/brokerwatch/brokerwatch.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Subscribe,
    Status,
    History { since_ms: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the brokerwatch daemon at {path}: {source}; is it running? (`systemctl status brokerwatch`; your user must be in the `brokerwatch` group)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something that is not brokerwatch's protocol: {0}")]
    Protocol(String),
}

type Replies = tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>;

/// Connects and sends `req`; returns the reply lines, and the write half, which must stay
/// open while replies are read (closing it ends the request).
async fn send(
    socket: &std::path::Path,
    req: &Request,
) -> Result<(Replies, tokio::net::unix::OwnedWriteHalf), ClientError> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    Ok((BufReader::new(r).lines(), w))
}

/// Sends one request and returns the first reply (for `status` and `history`).
pub async fn request(socket: &std::path::Path, req: &Request) -> Result<Value, ClientError> {
    let (mut lines, _w) = send(socket, req).await?;
    let reply = lines.next_line().await?.unwrap_or_default();
    let v: Value = serde_json::from_str(&reply)
        .map_err(|e| ClientError::Protocol(format!("{e}: {reply:?}")))?;
    if v["type"] == "error" {
        return Err(ClientError::Protocol(
            v["message"].as_str().unwrap_or("error").to_owned(),
        ));
    }
    Ok(v)
}

/// Subscribes and hands every reply line (alerts, lag notices) to `f` until the daemon
/// hangs up.
pub async fn subscribe(
    socket: &std::path::Path,
    mut f: impl FnMut(Value),
) -> Result<(), ClientError> {
    let (mut lines, _w) = send(socket, &Request::Subscribe).await?;
    while let Some(l) = lines.next_line().await? {
        let v: Value =
            serde_json::from_str(&l).map_err(|e| ClientError::Protocol(format!("{e}: {l:?}")))?;
        f(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for (req, text) in [
            (Request::Subscribe, r#"{"op":"subscribe"}"#),
            (Request::Status, r#"{"op":"status"}"#),
            (
                Request::History { since_ms: 5 },
                r#"{"op":"history","since_ms":5}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&req).unwrap(), text);
            assert_eq!(serde_json::from_str::<Request>(text).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"reload"}"#).is_err());
    }
}

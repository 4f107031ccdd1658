//! HTTP/1.1 over loopback with hyper: the keep-alive connection each traffic worker owns, and
//! one-shot GETs for the admin endpoints and the simulator's counters.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One HTTP/1.1 connection; requests on it go one at a time.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Small requests on a kept-alive connection: do not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            // Its errors surface on the next send as well, where they are counted.
            let _ = connection.await;
        });
        Ok(Connection { sender })
    }

    /// Sends and reads the whole answer.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((parts, body))
    }
}

/// `GET path` on a fresh connection: the status and the body as text.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut connection = Connection::open(addr).await?;
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let (parts, body) = connection.send(request).await?;
    Ok((
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

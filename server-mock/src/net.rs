//! The accept loop. It is hand-written (not `axum::serve`) so the mock can do what a real
//! network does: close one TCP connection without an answer, and go offline (refuse connections,
//! cut open ones) and come back on the same port.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::Router;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Handed to every request (as an extension) so a handler can close its own connection.
#[derive(Clone)]
pub(crate) struct ConnControl {
    kill: Arc<Notify>,
}

impl ConnControl {
    /// Closes the TCP connection carrying this request; the request's future never completes.
    pub async fn kill<T>(&self) -> T {
        self.kill.notify_one();
        std::future::pending().await
    }
}

/// Binds with `SO_REUSEADDR` so the mock can come back online on its port right away.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections while `online` is true. Going offline drops the listener (new connections
/// are refused) and every open connection, then reports `listening = false`; coming back rebinds
/// the same address and reports `listening = true`.
pub(crate) async fn supervise(
    first: TcpListener,
    addr: SocketAddr,
    app: Router,
    mut online: watch::Receiver<bool>,
    listening: watch::Sender<bool>,
) {
    let mut listener = Some(first);
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => {
                if online.wait_for(|o| *o).await.is_err() {
                    return;
                }
                rebind(addr).await
            }
        };
        listening.send_replace(true);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = current.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(serve_connection(stream, app.clone()));
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                changed = online.wait_for(|o| !*o) => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
        drop(current);
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        listening.send_replace(false);
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    loop {
        match bind(addr) {
            Ok(listener) => return listener,
            Err(e) => {
                eprintln!("aethex-mock: cannot listen on {addr} again yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let kill = Arc::new(Notify::new());
    let control = ConnControl { kill: kill.clone() };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(control.clone());
        app.clone().oneshot(req)
    });
    // With upgrades, a WebSocket handshake hands the socket over to the realtime relay (which
    // then owns it: going offline cuts it through the relay's registry, not here).
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = connection => {}
        // Dropping the connection future closes the socket without another byte.
        _ = kill.notified() => {}
    }
}

/// Serves `app` on one in-memory connection (the relay's pipe to the server), upgrades included.
pub(crate) async fn serve_io<IO>(io: IO, app: Router)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service =
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| app.clone().oneshot(req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
}

/// A response body that sends its first part, waits for it to be flushed, and then fails, so
/// hyper closes the socket in the middle of the body (the `Content-Length` header promised more).
pub(crate) struct CutBody {
    first: Option<Bytes>,
    flush_wait: Pin<Box<tokio::time::Sleep>>,
}

/// Long enough for hyper to write the status line, headers and first part to the socket.
const FLUSH_WAIT: Duration = Duration::from_millis(50);

impl CutBody {
    pub fn new(first: Bytes) -> Self {
        Self {
            first: Some(first),
            flush_wait: Box::pin(tokio::time::sleep(FLUSH_WAIT)),
        }
    }
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(bytes) = self.first.take() {
            self.flush_wait
                .as_mut()
                .reset(tokio::time::Instant::now() + FLUSH_WAIT);
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        std::task::ready!(self.flush_wait.as_mut().poll(cx));
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "aethex-mock: connection dropped mid-response",
        ))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

//! The HTTP server loop every service runs: HTTP/1.1 and HTTP/2 (cleartext, by preface) on
//! one listener, with the limits `axum::serve` does not expose — a deadline for reading a
//! request's headers (slowloris: a client trickling headers holds a connection, and with
//! enough of them every worker), a bound on header bytes and count, a lingering close (see
//! [`Lingering`]) — and graceful shutdown that stops accepting, lets open requests finish and
//! closes idle keep-alive connections.

use std::{
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt as _;

use crate::shutdown::Shutdown;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time to receive a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Largest header section: HTTP/1.1 read buffer and HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request.
    pub max_headers: usize,
}

/// Where connections come from: a listener, or an acceptor handing them over.
enum Connections {
    Listener(TcpListener),
    Handed(tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl Connections {
    /// The next connection; `None` once an acceptor has stopped handing them over.
    async fn next(&mut self) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
        match self {
            Self::Listener(listener) => Some(Ok(accept(listener).await)),
            Self::Handed(handed) => {
                let (stream, remote) = handed.recv().await?;
                Some(TcpStream::from_std(stream).map(|stream| (stream, remote)))
            }
        }
    }
}

/// The next connection on `listener`. A failed accept (out of file descriptors and the like)
/// is logged and retried after a pause instead of spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` triggers, then drains open connections.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: Shutdown) {
    serve_incoming(Connections::Listener(listener), router, limits, stop).await;
}

async fn serve_incoming(mut incoming: Connections, router: Router, limits: Limits, stop: Shutdown) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor for the read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(pair)) => pair,
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, "taking over a connection failed");
                    continue;
                }
            },
            () = stop.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(remote));
                    request
                });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(Lingering::new(stream)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}

/// Longest a closing connection keeps reading what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes a closing connection reads and drops before it gives up on a clean close.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// A connection that closes the way nginx's `lingering_close` does. When the server closes
/// first — an answer sent before the request's body was read (a 413, a refusal before the
/// upload), `Connection: close` — it shuts its sending side, then reads and drops what the
/// client is still sending until the client closes too, for at most [`LINGER`] and
/// [`LINGER_BYTES`]. Closing a socket with unread bytes makes the kernel send a reset
/// instead, which can reach the client before the answer and destroy it: the client, still
/// writing its body, sees "connection reset" and never reads the 413.
///
/// Hand-written: hyper closes with a plain `shutdown` and no library offers the drain.
struct Lingering {
    stream: TcpStream,
    /// The client has closed its side: nothing more can arrive, so nothing to linger for.
    read_closed: bool,
    /// When lingering ends, set once our sending side is shut.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    drained: usize,
}

impl Lingering {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read_closed: false,
            deadline: None,
            drained: 0,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 {
            this.read_closed = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = match &mut this.deadline {
            Some(deadline) => deadline,
            None => {
                ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                this.deadline.insert(Box::pin(tokio::time::sleep(LINGER)))
            }
        };
        if this.read_closed {
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0_u8; 8192];
        loop {
            if this.drained >= LINGER_BYTES || deadline.as_mut().poll(cx).is_ready() {
                // The client keeps sending: close anyway (the kernel resets).
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => this.drained += buf.filled().len(),
                // The client has closed (or broken) its side: a clean close now.
                Ok(()) | Err(_) => {
                    this.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

thread_local! {
    /// Which of [`serve_on_threads`]'s threads this is; `None` elsewhere.
    static SERVING_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the serving thread the caller runs on (`0..threads` of
/// [`serve_on_threads`]), or `None` off those threads. A handler keeps per-thread state (the
/// gateway: an upstream connection pool) by it.
pub fn serving_thread() -> Option<usize> {
    SERVING_THREAD.with(std::cell::Cell::get)
}

/// Serves `router` on `listener` from `threads` threads, each with a single-threaded runtime,
/// until `stop` triggers; returns once every thread has drained. The caller's runtime accepts
/// and deals the connections out in turn (the kernel, left to choose among threads waiting on
/// one socket, gave one thread four connections in five). A connection and every task it
/// spawns (a client's connection to an upstream) stay on its thread: no wakeups cross
/// threads, which on a proxy cost more than the work-stealing scheduler gains. Tasks the
/// handlers spawn end with their thread.
pub async fn serve_on_threads(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: Shutdown,
    threads: usize,
) -> std::io::Result<()> {
    let mut dealt = Vec::with_capacity(threads);
    let mut done = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let (router, stop) = (router.clone(), stop.clone());
        let (hand, handed) = tokio::sync::mpsc::unbounded_channel();
        let (finished, receiver) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                SERVING_THREAD.with(|t| t.set(Some(index)));
                runtime.block_on(serve_incoming(
                    Connections::Handed(handed),
                    router,
                    limits,
                    stop,
                ));
                let _ = finished.send(());
            })?;
        dealt.push(hand);
        done.push(receiver);
    }
    let mut turn = 0;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stop.wait() => break,
        };
        // Nonblocking, as the receiving thread's reactor needs it.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if dealt[turn % dealt.len()].send((stream, remote)).is_err() {
            // That thread has ended (it panicked): the process must be restarted.
            tracing::error!(thread = turn % dealt.len(), "a serving thread has ended");
            break;
        }
        turn += 1;
    }
    drop(listener);
    drop(dealt);
    for thread in done {
        // A thread that panicked dropped its sender: it has ended too.
        let _ = thread.await;
    }
    Ok(())
}

//! Connections the emulator can reset: a listener whose streams close with a TCP reset on demand,
//! looked up by the client's address ([`super::FaultKind::Reset`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::lock;

/// The live connections by peer address.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    live: Mutex<HashMap<SocketAddr, Arc<Kill>>>,
}

impl Connections {
    /// Resets the connection from `peer`: its stream fails every further read and write, and is
    /// closed with a RST. Returns whether such a connection was live.
    pub(crate) fn reset(&self, peer: SocketAddr) -> bool {
        match lock(&self.live).get(&peer) {
            Some(kill) => {
                kill.fire();
                true
            }
            None => false,
        }
    }
}

/// A per-connection reset switch.
#[derive(Debug, Default)]
struct Kill {
    fired: AtomicBool,
    /// The last reader waiting on the stream, woken when the switch fires.
    reader: Mutex<Option<Waker>>,
}

impl Kill {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.reader).take() {
            w.wake();
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// A TCP listener registering each accepted stream in [`Connections`].
pub(crate) struct ResettableListener {
    inner: TcpListener,
    connections: Arc<Connections>,
}

impl ResettableListener {
    pub(crate) fn new(inner: TcpListener, connections: Arc<Connections>) -> Self {
        ResettableListener { inner, connections }
    }
}

impl axum::serve::Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = axum::serve::Listener::accept(&mut self.inner).await;
        let kill = Arc::new(Kill::default());
        lock(&self.connections.live).insert(peer, Arc::clone(&kill));
        let io = ResettableStream {
            inner: stream,
            peer,
            kill,
            connections: Arc::clone(&self.connections),
        };
        (io, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted stream that fails with `ConnectionReset` once its switch fired, setting
/// `SO_LINGER` 0 first so that closing it sends a RST.
pub(crate) struct ResettableStream {
    inner: TcpStream,
    peer: SocketAddr,
    kill: Arc<Kill>,
    connections: Arc<Connections>,
}

impl ResettableStream {
    fn check(&self) -> io::Result<()> {
        if self.kill.fired() {
            // Best effort: without it the close is a FIN, still an answer-less close.
            let _ = self.inner.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "emulator: injected connection reset",
            ));
        }
        Ok(())
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        let mut live = lock(&self.connections.live);
        if live
            .get(&self.peer)
            .is_some_and(|k| Arc::ptr_eq(k, &self.kill))
        {
            live.remove(&self.peer);
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        *lock(&self.kill.reader) = Some(cx.waker().clone());
        // Fired between the check and storing the waker: nobody would wake us.
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

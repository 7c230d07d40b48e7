//! [`Coalescing`]: a gRPC connection whose answers leave together.
//!
//! h2 copies a DATA frame into its write buffer only when the frame is
//! small - 256 bytes on a socket with vectored writes, 1 KiB without - and
//! writes a larger one out on its own, with a system call (and, on
//! loopback, the peer's receive path) for every answer. A decision's answer
//! carries its headers (300-700 bytes), so every call was one write. Telling
//! h2 the socket has no vectored writes lets the answers of all the calls in
//! flight on a connection go out in one write: measured in BENCHMARKS.md.
//! (`examples/grpc_loadgen`'s client connections are `Coalescing` too.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP connection that says it has no vectored writes.
pub struct Coalescing(pub TcpStream);

impl AsyncRead for Coalescing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for Coalescing {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

//! The datagram transport gossip runs on, as two small traits: the real UDP
//! socket, the tests' in-memory network and the fault-injecting wrapper all
//! implement them. A leaf: it depends on nothing else in the crate, so the
//! gossip driver and the fault wrapper can both build on it.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

/// A datagram socket: real UDP, or the tests' in-memory network.
#[async_trait]
pub(crate) trait Transport: Send + Sync + 'static {
    /// Receives one datagram into `buf`; its length may exceed `buf` only by
    /// being cut (the caller bounds `buf` well above the largest datagram).
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)>;
    /// Sends without waiting; a datagram that cannot be sent now is dropped.
    fn send_to(&self, to: SocketAddr, datagram: &[u8]);
    /// Receives one datagram that has already arrived, without waiting.
    fn try_recv_from(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)>;
}

/// Opens transports.
#[async_trait]
pub(crate) trait Network: Send + Sync + 'static {
    async fn bind(&self, listen: SocketAddr) -> std::io::Result<Arc<dyn Transport>>;
}

/// The real network.
pub(crate) struct Udp;

#[async_trait]
impl Network for Udp {
    async fn bind(&self, listen: SocketAddr) -> std::io::Result<Arc<dyn Transport>> {
        Ok(Arc::new(tokio::net::UdpSocket::bind(listen).await?))
    }
}

#[async_trait]
impl Transport for tokio::net::UdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::recv_from(self, buf).await
    }

    fn send_to(&self, to: SocketAddr, datagram: &[u8]) {
        if let Err(error) = self.try_send_to(datagram, to) {
            tracing::debug!(%to, %error, "gossip datagram not sent");
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf).ok()
    }
}

//! The gRPC edge (`[grpc] bind`): Envoy's Rate Limit Service
//! ([`ratelimit`]) and External Authorization ([`authz`]) on one listener
//! of its own, served by tonic on threads of its own.
//!
//! A decision here is every edge's: the same [`Meter`](crate::metering::Meter)
//! decides, records and enqueues it, the same headers (SPEC §6) describe
//! it, the same JSON error explains a refusal. An allowed decision that
//! cannot be recorded - the queue to the store is full, because the store
//! has failed for longer than the queue holds (a failing store alone does
//! not: its records wait and are retried, SPEC §7) - is given back and
//! answered `UNAVAILABLE`, so that Envoy's `failure_mode_deny` (rate
//! limit) or `failure_mode_allow` (ext_authz) applies.

// tonic's `Status` (176 bytes) is the error of every tonic service.
#![allow(clippy::result_large_err)]

pub(crate) mod authz;
pub mod conn;
pub(crate) mod ratelimit;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use futures_util::StreamExt;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::Status;

use crate::metering::headers::Values;
use crate::metering::Metering;
use crate::quota::Decision;

/// What the gRPC services share.
pub struct Edge {
    pub metering: Arc<Metering>,
    /// A call is held to this many bytes (the HTTP API's body cap).
    pub(crate) max_message_bytes: usize,
    /// Whether a `tenant_id` descriptor is taken (`[grpc] tenant_id`).
    pub tenant_id: bool,
    /// The peers allowed to call (`[grpc] peers`; empty: any).
    pub peers: Vec<IpAddr>,
}

/// How long a stop waits for gRPC clients to close their connections (as
/// the HTTP server waits for its requests in flight).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC listener, served by threads of its own until [`stop`](Self::stop).
pub(crate) struct GrpcServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl GrpcServer {
    /// Serves both services on `listener` from `threads` threads, each
    /// accepting connections and serving them on a single-threaded runtime
    /// of its own (as actix's workers do): a call never wakes another
    /// thread, which on a multi-threaded runtime cost more than the call.
    pub(crate) fn start(
        state: Arc<Edge>,
        listener: std::net::TcpListener,
        threads: usize,
    ) -> std::io::Result<GrpcServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let listener = listener.try_clone()?;
            let (state, mut stopped) = (state.clone(), stopped.clone());
            let handle = std::thread::Builder::new()
                .name(format!("tollgate-grpc-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let incoming = tokio::net::TcpListener::from_std(listener)
                            .map_err(|e| e.to_string())
                            .and_then(|l| {
                                TcpIncoming::from_listener(l, true, None).map_err(|e| e.to_string())
                            });
                        let incoming = match incoming {
                            Ok(i) => i.map(|c| c.map(conn::Coalescing)),
                            Err(error) => {
                                tracing::error!(%error, "the gRPC listener cannot be used");
                                return;
                            }
                        };
                        // A call is held to the HTTP API's body cap.
                        let cap = state.max_message_bytes;
                        let served = tonic::transport::Server::builder()
                            .add_service(
                                RateLimitServiceServer::new(ratelimit::RateLimit::new(
                                    state.clone(),
                                ))
                                .max_decoding_message_size(cap),
                            )
                            .add_service(
                                AuthorizationServer::new(authz::Authz::new(state))
                                    .max_decoding_message_size(cap),
                            )
                            .serve_with_incoming_shutdown(incoming, {
                                let mut stopped = stopped.clone();
                                async move {
                                    let _ = stopped.wait_for(|stop| *stop).await;
                                }
                            });
                        // A graceful stop waits for the clients to close
                        // their connections; one that keeps it open past
                        // the grace is cut off (its calls were answered).
                        let grace = async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                            tokio::time::sleep(STOP_GRACE).await;
                        };
                        let served = tokio::select! {
                            served = served => served,
                            () = grace => {
                                tracing::warn!("gRPC connections still open {} s after the stop: closed", STOP_GRACE.as_secs());
                                Ok(())
                            }
                        };
                        if let Err(error) = served {
                            tracing::error!(%error, "the gRPC server failed");
                        }
                    })
                })?;
            handles.push(handle);
        }
        Ok(GrpcServer {
            addr,
            stop,
            threads: handles,
        })
    }

    /// Stops accepting, answers the calls in flight, then returns (their
    /// records are in the queue by then).
    pub(crate) fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.stop.send(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The answer when an allowed decision could not be recorded (the queue
/// to the store is full; what it took was given back).
fn unrecorded() -> Status {
    Status::unavailable(
        "the decision could not be recorded: the queue to the store is full; try again",
    )
}

/// The rate-limit headers of `d` and of the named limits it met (SPEC §6
/// and §12; `Retry-After` only on a refusal), as names and values.
fn limit_headers(
    d: &Decision,
    views: &[crate::quota::scoped::View],
    success: bool,
) -> Vec<(&'static str, String)> {
    Values::with_limits(d, views, success)
        .each()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

/// A call from a peer not in `[grpc] peers` (when set) is refused.
pub(crate) fn peer_allowed<T>(
    edge: &Edge,
    request: &tonic::Request<T>,
) -> Result<(), tonic::Status> {
    if edge.peers.is_empty() {
        return Ok(());
    }
    match request.remote_addr() {
        Some(a) if edge.peers.contains(&a.ip()) => Ok(()),
        _ => Err(tonic::Status::permission_denied(
            "this peer may not call Tollgate's gRPC services ([grpc] peers)",
        )),
    }
}

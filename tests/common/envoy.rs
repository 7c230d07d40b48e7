//! A gRPC client of Envoy's two services (tonic over loopback HTTP/2), as
//! Envoy calls them: the rate-limit service and ext_authz.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::Value;
use tonic::transport::Channel;

/// A gRPC client of both services, as Envoy would call them.
pub struct Envoy {
    rt: tokio::runtime::Runtime,
    rls: RateLimitServiceClient<Channel>,
    authz: AuthorizationClient<Channel>,
}

impl Envoy {
    pub fn connect(addr: SocketAddr) -> Envoy {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt
            .block_on(
                Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect(),
            )
            .unwrap();
        Envoy {
            rt,
            rls: RateLimitServiceClient::new(channel.clone()),
            authz: AuthorizationClient::new(channel),
        }
    }

    pub fn limit(&mut self, req: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        let rls = &mut self.rls;
        self.rt
            .block_on(rls.should_rate_limit(req))
            .map(|r| r.into_inner())
    }

    pub fn check(&mut self, req: CheckRequest) -> Result<CheckResponse, tonic::Status> {
        let authz = &mut self.authz;
        self.rt.block_on(authz.check(req)).map(|r| r.into_inner())
    }
}

/// A descriptor of `entries`, with its own `hits_addend`.
pub fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        limit: None,
        hits_addend: hits.map(|value| UInt64Value { value }),
    }
}

/// A rate-limit request of `descriptors` and the request's `hits_addend`.
pub fn request(descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors,
        hits_addend: hits,
    }
}

/// A header's value among `headers`.
pub fn find(headers: &[HeaderValue], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.clone())
}

/// A header's value among `headers` (with their append actions).
pub fn find_option(headers: &[HeaderValueOption], name: &str) -> Option<String> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.clone())
}

/// An ext_authz check of `method path` with `headers` and the route's cost.
pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    cost: Option<&str>,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<HashMap<_, _>>(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: cost
                .map(|c| HashMap::from([("cost".to_string(), c.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

/// A denied check's gRPC code, HTTP status, headers and JSON body.
pub fn denied(r: &CheckResponse) -> (i32, u32, Vec<HeaderValueOption>, Value) {
    match r.http_response.clone() {
        Some(HttpResponse::DeniedResponse(d)) => (
            r.status.as_ref().unwrap().code,
            d.status.unwrap().code as u32,
            d.headers,
            serde_json::from_str(&d.body).unwrap(),
        ),
        other => panic!("not denied: {other:?}"),
    }
}

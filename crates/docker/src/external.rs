//! A container's external connectivity: its published ports held and
//! DNAT'ed to it (`ProgramExternalConnectivity`), let go (`Revoke…`), and
//! told back to Docker (`EndpointOperInfo`).

use crate::api::{self, ExternalConnectivity, PortBinding};
use crate::error::{DriverError, save, short};
use crate::publish::{Inner, PublishError};
use crate::rules;
use crate::state::Store;
use serde_json::{Value, json};
use std::time::Duration;

/// How long a port held by one of our endpoints waits for that endpoint's
/// veth to go, in case its container was just removed (a port truly taken
/// is refused this much later).
const STALE_PATIENCE: Duration = Duration::from_secs(2);

/// Polls `f` every 20 ms until it holds or `limit` has passed.
fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while !f() {
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// ProgramExternalConnectivity: the endpoint's `-p` ports, held and DNAT'ed
/// to it (all or none), on the network that gives the container its
/// default gateway (Docker calls it there only, so a container on two
/// networks publishes once).
/// `reap` forgets stale endpoints (the driver's), saying whether it did.
pub(crate) fn program(
    inner: &mut Inner,
    r: &ExternalConnectivity,
    reap: &mut dyn FnMut(&mut Inner) -> bool,
) -> Result<Value, DriverError> {
    let bindings: Vec<PortBinding> = match r.options.get(api::PORTMAP) {
        Some(v) if !v.is_null() => serde_json::from_value(v.clone()).map_err(|e| DriverError::BadRequest {
            method: "NetworkDriver.ProgramExternalConnectivity".into(),
            detail: e.to_string(),
        })?,
        _ => Vec::new(),
    };
    let Some(ep) = inner.store.state.endpoints.get(&r.endpoint_id) else {
        return Err(DriverError::Refused(format!(
            "endpoint {} was never created on this driver",
            short(&r.endpoint_id)
        )));
    };
    if bindings.is_empty() || !ep.published.is_empty() {
        return Ok(json!({}));
    }
    if inner.store.state.networks.get(&ep.network).is_some_and(|n| n.internal) {
        return Err(DriverError::Refused("an --internal network publishes no port".into()));
    }
    let published = match inner.held.hold(&r.endpoint_id, &bindings) {
        Err(PublishError::Allocated { port, .. }) if inner.held.holder(port).is_some() => {
            // Held by one of ours: perhaps a container dockerd's restart just
            // removed (its namespace, and the veth with it, go a moment later).
            poll_until(STALE_PATIENCE, || reap(inner));
            inner.held.hold(&r.endpoint_id, &bindings)?
        }
        other => other?,
    };
    if let Some(e) = inner.store.state.endpoints.get_mut(&r.endpoint_id) {
        e.published = published.clone();
    }
    let done = rules::apply(&inner.store.state).map_err(DriverError::from).and_then(|()| save(&inner.store));
    if let Err(e) = done {
        inner.held.release(&r.endpoint_id);
        if let Some(e) = inner.store.state.endpoints.get_mut(&r.endpoint_id) {
            e.published.clear();
        }
        let _ = rules::apply(&inner.store.state);
        return Err(e);
    }
    tracing::info!(endpoint = short(&r.endpoint_id), ?published, "ports published");
    Ok(json!({}))
}

/// RevokeExternalConnectivity: the endpoint's published ports let go.
pub(crate) fn revoke(inner: &mut Inner, endpoint: &str) -> Result<Value, DriverError> {
    inner.held.release(endpoint);
    let Some(e) = inner.store.state.endpoints.get_mut(endpoint) else { return Ok(json!({})) };
    if e.published.is_empty() {
        return Ok(json!({}));
    }
    e.published.clear();
    rules::apply(&inner.store.state)?;
    save(&inner.store)?;
    tracing::info!(endpoint = short(endpoint), "ports unpublished");
    Ok(json!({}))
}

/// EndpointOperInfo: the ports published, with the host ports picked.
pub(crate) fn oper_info(store: &Store, endpoint: &str) -> Value {
    match store.state.endpoints.get(endpoint).filter(|e| !e.published.is_empty()) {
        Some(e) => json!({ "Value": { api::PORTMAP: crate::publish::bindings(&e.published) } }),
        None => json!({ "Value": {} }),
    }
}

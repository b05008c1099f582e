//! Outbound delivery as `btps serve` wires it: the originator (checked against DNS
//! at start) that the admin socket signs with, and the delivery worker.

use std::sync::Arc;

use btps::client::{ClientOptions, client_config};
use btps::config::Config;
use btps::crypto::PrivateKey;
use btps::delivery::{DeliveryService, Originator, Outbound, Remote};
use btps::identity::dns::{KeyDirectory, TxtResolver};
use btps::server::Service;
use btps::server::trust::TrustPolicy;
use tokio::sync::Notify;

/// The originator and the worker's wake-up, after checking each hosted domain's
/// delegator against DNS (`07-agents-auth.md` §8.2). A failed check is reported
/// (the server still starts: receiving does not need it); what the domain's
/// identities send is then refused with the same reason until DNS is right.
pub(super) async fn outbound(
    config: &Config,
    key: &Arc<PrivateKey>,
    resolver: &Arc<dyn TxtResolver>,
    policy: &TrustPolicy,
) -> Outbound {
    let originator = Originator::new(
        Arc::clone(key),
        config.server.selector.clone(),
        Arc::new(config.clone()),
        Some(KeyDirectory::new(Arc::clone(resolver))),
    );
    for domain in &config.domains {
        match originator.check_delegator(&domain.name).await {
            Ok(()) => tracing::info!(
                domain = %domain.name,
                delegator = %originator.delegator(&domain.name),
                "the delegator's DNS key is the server key: the server signs for this domain"
            ),
            Err(error) => {
                println!("warning: {error}");
                tracing::error!(domain = %domain.name, error = %error, "the server cannot sign for this domain's identities");
            }
        }
    }
    Outbound {
        originator: Arc::new(originator),
        policy: policy.clone(),
        wake: Arc::new(Notify::new()),
    }
}

/// The delivery worker, configured by `[delivery]`.
pub(super) fn service(
    config: &Config,
    resolver: Arc<dyn TxtResolver>,
    outbound: &Outbound,
) -> anyhow::Result<Box<dyn Service>> {
    let settings = &config.delivery;
    let options = ClientOptions {
        ca_file: settings.ca_file.clone(),
        ..ClientOptions::default()
    };
    let tls = match client_config(&options) {
        Ok(tls) => Ok(tls),
        Err(error) if settings.ca_file.is_some() => {
            return Err(anyhow::anyhow!("delivery.ca_file: {error}"));
        }
        Err(error) => {
            println!("warning: outbound delivery to other servers cannot verify them: {error}");
            tracing::error!(error = %error, "no trusted CA for outbound delivery");
            Err(error.to_string())
        }
    };
    let remote = Remote::new(
        KeyDirectory::new(resolver),
        tls,
        settings.connect_timeout,
        settings.response_timeout,
        settings.connections_per_host,
    );
    Ok(Box::new(DeliveryService::new(
        Arc::new(config.clone()),
        remote,
        Arc::clone(&outbound.wake),
    )))
}

//! DNS discovery end to end: hickory-resolver against the built-in responder on
//! loopback, the cache in between, and the vectors' keys published as the reference's
//! test DNS publishes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use btps::identity::Identity;
use btps::identity::dns::{
    CacheConfig, CachingResolver, DnsError, HickoryTxtResolver, HostRecordError, KeyDirectory,
    KeyLookupError, ResolverOptions, TxtResolver,
};
use btps::identity::responder::{DnsResponder, Failure};

use crate::util::{vector_json, vector_text};

const TIMEOUT: Duration = Duration::from_millis(300);

fn responder() -> DnsResponder {
    DnsResponder::start("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn resolver(responder: &DnsResponder) -> HickoryTxtResolver {
    HickoryTxtResolver::with_name_servers(
        &[responder.local_addr()],
        ResolverOptions {
            timeout: TIMEOUT,
            attempts: 1,
        },
    )
}

fn directory(responder: &DnsResponder) -> KeyDirectory {
    KeyDirectory::new(Arc::new(resolver(responder)))
}

fn caching(
    responder: &DnsResponder,
    config: CacheConfig,
) -> Arc<CachingResolver<HickoryTxtResolver>> {
    Arc::new(CachingResolver::new(resolver(responder), config))
}

fn identity(text: &str) -> Identity {
    Identity::parse(text).unwrap()
}

/// The PEM body on one line: what the vectors' DNS publishes as `p=`.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .collect::<String>()
}

#[tokio::test]
async fn key_record_is_found() {
    let dns = responder();
    let billing = identity("billing$vendor.test");
    dns.publish_key(&billing, "btps1", "QUJDRA");
    let key = directory(&dns)
        .identity_key(&billing, "btps1")
        .await
        .unwrap();
    assert_eq!(key.public_key_base64, "QUJDRA");
    assert_eq!(key.version.as_deref(), Some("1.0.0"));
    assert_eq!(key.key_type.as_deref(), Some("rsa"));
    assert_eq!(
        dns.query_count_for("btps1._btps.identity.billing.vendor.test"),
        1
    );
}

#[tokio::test]
async fn host_record_is_found_and_checked() {
    let dns = responder();
    dns.publish_host("vendor.test", "btps.vendor.test:4443", "btps7");
    let directory = directory(&dns);
    let host = directory.host("vendor.test").await.unwrap();
    assert_eq!(
        (
            host.host.as_str(),
            host.port,
            host.selector.as_str(),
            host.version.as_str()
        ),
        ("btps.vendor.test", 4443, "btps7", "1.0.0")
    );

    // The docs' space-separated form leaves no `s`.
    dns.set_txt(
        "_btps.host.client.test",
        vec!["v=1.0.0; u=btps.client.test:4443 s=btps1".into()],
    );
    assert_eq!(
        directory.host("client.test").await,
        Err(KeyLookupError::NoUsableHost {
            name: "_btps.host.client.test".into(),
            reason: HostRecordError::MissingField { key: "s" },
        })
    );
}

#[tokio::test]
async fn long_and_padded_values_survive_udp_truncation_and_tcp() {
    let dns = responder();
    let name = "btps1._btps.identity.big.vendor.test";
    // 6000 bytes: more than any UDP buffer we announce, so the answer is truncated and
    // the resolver repeats the query over TCP. The `==` padding must be kept (§4.3).
    let key = format!("{}==", "A".repeat(5998));
    dns.set_txt(name, vec![format!("v=1.0.0; k=rsa; p={key}")]);
    let found = directory(&dns)
        .identity_key(&identity("big$vendor.test"), "btps1")
        .await
        .unwrap();
    assert_eq!(found.public_key_base64, key);
    assert!(
        dns.query_count_for(name) >= 2,
        "expected a UDP then a TCP query"
    );
}

#[tokio::test]
async fn several_records_are_glued_in_order() {
    let dns = responder();
    let name = "btps1._btps.identity.split.vendor.test";
    dns.set_txt_raw(
        name,
        vec![vec![
            b"v=1.0.0; k=r".to_vec(),
            b"sa; p=QU".to_vec(),
            b"JD".to_vec(),
        ]],
    );
    let answer = resolver(&dns).lookup_txt(name).await.unwrap();
    assert_eq!(
        answer.records,
        vec![vec![
            b"v=1.0.0; k=r".to_vec(),
            b"sa; p=QU".to_vec(),
            b"JD".to_vec()
        ]]
    );
    let key = directory(&dns)
        .identity_key(&identity("split$vendor.test"), "btps1")
        .await
        .unwrap();
    assert_eq!(key.public_key_base64, "QUJD");
}

#[tokio::test]
async fn absent_records_are_not_found() {
    let dns = responder();
    let directory = directory(&dns);
    let alice = identity("alice$vendor.test");

    // NXDOMAIN.
    let name = alice.key_record_name("btps1");
    assert_eq!(
        directory.identity_key(&alice, "btps1").await,
        Err(KeyLookupError::NotFound { name: name.clone() })
    );

    // NODATA: the name exists with no TXT record.
    dns.set_txt(&name, Vec::new());
    assert_eq!(
        directory.identity_key(&alice, "btps1").await,
        Err(KeyLookupError::NotFound { name: name.clone() })
    );

    // NODATA: an empty non-terminal (only a name below it exists).
    let parent = "_btps.identity.alice.vendor.test";
    assert!(matches!(
        resolver(&dns).lookup_txt(parent).await,
        Err(DnsError::NotFound { .. })
    ));

    // A record without `p=` is no key.
    dns.set_txt(&name, vec!["v=1.0.0; k=rsa".into()]);
    assert_eq!(
        directory.identity_key(&alice, "btps1").await,
        Err(KeyLookupError::NoUsableKey { name })
    );
}

#[tokio::test]
async fn server_failures_are_temporary_with_the_wire_message() {
    let dns = responder();
    let directory = directory(&dns);
    let billing = identity("billing$vendor.test");
    let name = billing.key_record_name("btps1");
    dns.publish_key(&billing, "btps1", "QUJD");

    for failure in [Failure::ServFail, Failure::Refused] {
        dns.set_failure(&name, failure);
        let error = directory.identity_key(&billing, "btps1").await.unwrap_err();
        assert!(error.is_temporary(), "{failure:?}: {error:?}");
        assert_eq!(
            error.to_string(),
            format!("Temporary DNS failure while resolving {name}, retry later")
        );
    }

    dns.clear_failure(&name);
    assert!(directory.identity_key(&billing, "btps1").await.is_ok());
}

#[tokio::test]
async fn unanswered_query_times_out_as_temporary() {
    let dns = responder();
    let name = "_btps.host.silent.test";
    dns.set_failure(name, Failure::Drop);
    let started = Instant::now();
    let error = directory(&dns).host("silent.test").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        error.to_string(),
        format!("Temporary DNS failure while resolving {name}, retry later")
    );
    assert!(elapsed >= TIMEOUT, "gave up after {elapsed:?}");
    assert!(elapsed < TIMEOUT * 10, "took {elapsed:?}");
    assert!(dns.query_count_for(name) >= 1);
}

#[tokio::test]
async fn impossible_names_are_invalid_not_temporary() {
    let dns = responder();
    let selector = "s".repeat(64);
    let error = directory(&dns)
        .identity_key(&identity("billing$vendor.test"), &selector)
        .await
        .unwrap_err();
    assert!(
        matches!(error, KeyLookupError::InvalidName { .. }),
        "{error:?}"
    );
    assert_eq!(dns.query_count(), 0);
}

#[tokio::test]
async fn names_compare_case_insensitively() {
    let dns = responder();
    dns.set_txt(
        "_btps.host.Vendor.Test",
        vec!["v=1.0.0; u=h; s=btps1".into()],
    );
    let host = directory(&dns).host("VENDOR.test").await.unwrap();
    assert_eq!(host.host, "h");
}

#[tokio::test]
async fn unusual_and_international_names_resolve() {
    // Any byte may sit in a label; `+` is not a host-name character but is sent as is.
    let dns = responder();
    let directory = directory(&dns);
    for text in ["pay+x$vendor.test", "İnfo$örnek.test"] {
        let identity = identity(text);
        dns.publish_key(&identity, "btps1", "QUJD");
        let key = directory.identity_key(&identity, "btps1").await.unwrap();
        assert_eq!(key.public_key_base64, "QUJD", "{text}");
    }
}

#[tokio::test]
async fn uncached_resolver_asks_every_time() {
    // hickory's own cache is off; caching is the CachingResolver's job alone.
    let dns = responder();
    dns.publish_host("vendor.test", "h:1", "btps1");
    let resolver = resolver(&dns);
    for _ in 0..3 {
        resolver.lookup_txt("_btps.host.vendor.test").await.unwrap();
    }
    resolver
        .lookup_txt("_btps.host.absent.test")
        .await
        .unwrap_err();
    resolver
        .lookup_txt("_btps.host.absent.test")
        .await
        .unwrap_err();
    assert_eq!(dns.query_count(), 5);
}

#[tokio::test]
async fn cache_answers_hits_without_querying() {
    let dns = responder();
    let billing = identity("billing$vendor.test");
    let name = billing.key_record_name("btps1");
    dns.publish_key(&billing, "btps1", "QUJD");
    let cache = caching(&dns, CacheConfig::default());
    let directory = KeyDirectory::new(cache.clone());
    for _ in 0..5 {
        assert_eq!(
            directory
                .identity_key(&billing, "btps1")
                .await
                .unwrap()
                .public_key_base64,
            "QUJD"
        );
    }
    assert_eq!(dns.query_count_for(&name), 1);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 4, 1));
}

#[tokio::test]
async fn cache_keeps_not_found_but_not_failures() {
    let dns = responder();
    let cache = caching(&dns, CacheConfig::default());
    let missing = "_btps.host.missing.test";
    for _ in 0..3 {
        assert!(matches!(
            cache.lookup_txt(missing).await,
            Err(DnsError::NotFound { .. })
        ));
    }
    assert_eq!(dns.query_count_for(missing), 1);
    assert_eq!(cache.stats().negative_hits, 2);

    let failing = "_btps.host.failing.test";
    dns.set_failure(failing, Failure::ServFail);
    assert!(matches!(
        cache.lookup_txt(failing).await,
        Err(DnsError::Temporary { .. })
    ));
    let after_first = dns.query_count_for(failing);
    assert!(after_first >= 1);
    assert!(matches!(
        cache.lookup_txt(failing).await,
        Err(DnsError::Temporary { .. })
    ));
    assert!(
        dns.query_count_for(failing) > after_first,
        "a failure must not be cached"
    );

    // Once the server recovers, the next lookup succeeds.
    dns.clear_failure(failing);
    dns.publish_host("failing.test", "h", "btps1");
    assert!(cache.lookup_txt(failing).await.is_ok());
}

#[tokio::test]
async fn cache_entries_expire_with_the_ttl() {
    let dns = responder();
    dns.set_ttl(1);
    let name = "_btps.host.vendor.test";
    dns.publish_host("vendor.test", "old.vendor.test", "btps1");
    let cache = caching(
        &dns,
        CacheConfig {
            min_ttl: Duration::ZERO,
            negative_ttl: Duration::from_millis(400),
            ..CacheConfig::default()
        },
    );
    let directory = KeyDirectory::new(cache.clone());

    let first = cache.lookup_txt(name).await.unwrap();
    assert_eq!(first.ttl, Duration::from_secs(1));
    dns.publish_host("vendor.test", "new.vendor.test", "btps2");
    assert_eq!(
        directory.host("vendor.test").await.unwrap().host,
        "old.vendor.test"
    );
    assert_eq!(dns.query_count_for(name), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let host = directory.host("vendor.test").await.unwrap();
    assert_eq!(
        (host.host.as_str(), host.selector.as_str()),
        ("new.vendor.test", "btps2")
    );
    assert_eq!(dns.query_count_for(name), 2);

    // A negative answer expires after the negative TTL: a key published after a
    // failed delivery is seen by the retry.
    let finance = identity("finance$client.test");
    assert!(matches!(
        directory.identity_key(&finance, "btps1").await,
        Err(KeyLookupError::NotFound { .. })
    ));
    dns.publish_key(&finance, "btps1", "QUJD");
    assert!(matches!(
        directory.identity_key(&finance, "btps1").await,
        Err(KeyLookupError::NotFound { .. })
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        directory
            .identity_key(&finance, "btps1")
            .await
            .unwrap()
            .public_key_base64,
        "QUJD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_name_send_one_query() {
    let dns = responder();
    let name = "_btps.host.vendor.test";
    dns.publish_host("vendor.test", "h", "btps1");
    let cache = caching(&dns, CacheConfig::default());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup_txt(name).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(dns.query_count_for(name), 1);
    let stats = cache.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits + stats.coalesced, 15);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn vector_keys_resolve_to_their_pem_bodies() {
    let index = vector_json("keys/index.json");
    let dns = responder();
    for (domain, settings) in index["domains"].as_object().unwrap() {
        let selector = settings["hostSelector"].as_str().unwrap();
        dns.publish_host(domain, &format!("btps.{domain}:4443"), selector);
    }
    let mut published = Vec::new();
    for (key_name, key) in index["keys"].as_object().unwrap() {
        if key["dns"].as_bool() != Some(true) {
            continue;
        }
        let identity = identity(key["identity"].as_str().unwrap());
        let selector = key["selector"].as_str().unwrap().to_owned();
        let body = pem_body(&vector_text(&format!(
            "keys/{}",
            key["publicKey"].as_str().unwrap()
        )));
        dns.publish_key(&identity, &selector, &body);
        published.push((key_name.clone(), identity, selector, body));
    }
    assert!(
        published.len() >= 5,
        "only {} DNS keys in the vectors",
        published.len()
    );

    let directory = KeyDirectory::new(caching(&dns, CacheConfig::default()));
    for (key_name, identity, selector, body) in &published {
        let key = directory.identity_key(identity, selector).await.unwrap();
        assert_eq!(&key.public_key_base64, body, "{key_name}");
        // RSA-2048 SPKI: 294 bytes of DER, unpadded base64 (vectors README).
        assert!(!body.ends_with('='), "{key_name}");
        let host = directory.host(identity.domain()).await.unwrap();
        assert_eq!(host.port, 4443);
        assert_eq!(
            Some(host.selector.as_str()),
            index["domains"][identity.domain()]["hostSelector"].as_str()
        );
    }
    // A key that is published nowhere stays absent.
    let rogue = identity("rogue$vendor.test");
    assert!(matches!(
        directory.identity_key(&rogue, "btps1").await,
        Err(KeyLookupError::NotFound { .. })
    ));
}

#[test]
fn responder_stops_on_drop_and_frees_its_port() {
    let dns = responder();
    let address = dns.local_addr();
    drop(dns);
    // Both sockets are closed once drop returns: the same port can be bound again.
    let again = DnsResponder::start(address).unwrap();
    assert_eq!(again.local_addr(), address);
}

/// A name server that reads every query and never answers; counts the queries.
fn silent_name_server() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&queries);
    std::thread::spawn(move || {
        let mut buffer = [0_u8; 4096];
        while socket.recv_from(&mut buffer).is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (address, queries)
}

/// `dns.timeout_ms × dns.attempts` is the whole budget of a lookup: a name server that
/// never answers is asked `attempts` times and the failure comes back within
/// timeout × attempts (plus a margin well under one more timeout).
#[tokio::test]
async fn a_silent_name_server_fails_within_timeout_times_attempts() {
    assert_eq!(
        ResolverOptions::default().deadline(),
        Duration::from_secs(4),
        "the documented default: 2 s x 2 attempts"
    );
    let (address, queries) = silent_name_server();
    let timeout = Duration::from_millis(400);
    for attempts in [1_usize, 2, 3] {
        let options = ResolverOptions { timeout, attempts };
        let resolver = HickoryTxtResolver::with_name_servers(&[address], options);
        let before = queries.load(std::sync::atomic::Ordering::SeqCst);
        let name = format!("btps1._btps.identity.silent{attempts}.vendor.test");
        let started = Instant::now();
        let error = resolver.lookup_txt(&name).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(error, DnsError::Temporary { .. }),
            "{attempts}: {error:?}"
        );
        let budget = options.deadline();
        assert_eq!(budget, timeout * u32::try_from(attempts).unwrap());
        assert!(
            elapsed < budget + timeout / 2,
            "{attempts} attempts of {timeout:?} took {elapsed:?}"
        );
        assert!(
            elapsed >= budget - timeout / 2,
            "{attempts} attempts gave up after {elapsed:?}"
        );
        // Late datagrams of this lookup would only raise the count.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = queries.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert_eq!(sent, attempts, "queries sent with {attempts} attempts");
    }
}

/// `btps dns serve`'s mode: the zone is read from its source before every answer,
/// so a change is seen by the very next query; a source with nothing to say keeps
/// the records served; failures injected by name stay.
#[tokio::test]
async fn a_followed_zone_is_read_before_every_answer() {
    let dns = responder();
    dns.set_txt("stale.test", vec![String::from("replaced")]);
    let zone = Arc::new(std::sync::Mutex::new(Some(vec![(
        String::from("_btps.host.vendor.test"),
        vec![String::from("v=1.0.0; u=127.0.0.1:1; s=btps1")],
    )])));
    let source = Arc::clone(&zone);
    dns.follow(move || source.lock().unwrap().clone());
    let lookup = resolver(&dns);

    let answer = lookup.lookup_txt("_btps.host.vendor.test").await.unwrap();
    assert_eq!(
        answer.records,
        [[b"v=1.0.0; u=127.0.0.1:1; s=btps1".to_vec()]]
    );
    assert!(matches!(
        lookup.lookup_txt("stale.test").await,
        Err(DnsError::NotFound { .. })
    ));

    *zone.lock().unwrap() = Some(vec![(
        String::from("btps1._btps.identity.billing.vendor.test"),
        vec![String::from("v=1.0.0; k=rsa; p=QUJDRA")],
    )]);
    let answer = lookup
        .lookup_txt("btps1._btps.identity.billing.vendor.test")
        .await
        .unwrap();
    assert_eq!(answer.records, [[b"v=1.0.0; k=rsa; p=QUJDRA".to_vec()]]);
    assert!(matches!(
        lookup.lookup_txt("_btps.host.vendor.test").await,
        Err(DnsError::NotFound { .. })
    ));

    // Nothing from the source: the last zone stays.
    *zone.lock().unwrap() = None;
    assert!(
        lookup
            .lookup_txt("btps1._btps.identity.billing.vendor.test")
            .await
            .is_ok()
    );
    dns.set_failure(
        "btps1._btps.identity.billing.vendor.test",
        Failure::ServFail,
    );
    assert!(matches!(
        lookup
            .lookup_txt("btps1._btps.identity.billing.vendor.test")
            .await,
        Err(DnsError::Temporary { .. })
    ));
}

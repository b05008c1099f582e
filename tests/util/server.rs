//! A real server for the tests: TLS on a loopback port, a redb file in a temporary
//! directory, and keys resolved from a real DNS server on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use btps::client::{BtpsClient, ClientOptions};
use btps::config::Config;
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, KeyDirectory, ResolverOptions, TxtResolver,
};
use btps::identity::responder::DnsResponder;
use btps::protocol::TransporterType;
use btps::protocol::json::{self, Object};
use btps::protocol::response::ServerResponse;
use btps::server::events::Events;
use btps::server::hooks::{ErrorCallback, Lifecycle};
use btps::server::middleware::Middleware;
use btps::server::trust::TrustPolicy;
use btps::server::{ClockPolicy, ConnectionLimits, ListenerSettings, Server, bootstrap};
use btps::signing::{self, DnsKeys, KeySource, TransporterDraft};
use btps::store::{
    IdentityRecord, JsonFilesStorage, JsonIdentityStore, JsonTrustStore, NewTrustRecord,
    PrivacyType, PublicKeyRecord, RedbOptions, RedbStore, Storage, Timestamp, TrustStatus,
};
use tokio::sync::oneshot;

use super::{vector_json, vector_text};

/// A vector key pair by name (`keys/NAME.key.pem`).
pub fn vector_key(name: &str) -> PrivateKey {
    PrivateKey::from_pem(&vector_text(&format!("keys/{name}.key.pem"))).unwrap()
}

/// A DNS server on loopback publishing every vector key marked `dns: true`.
pub fn vector_dns() -> DnsResponder {
    let responder = DnsResponder::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let index = vector_json("keys/index.json");
    for entry in index["keys"].as_object().unwrap().values() {
        if entry["dns"] != true {
            continue;
        }
        let identity = Identity::parse(entry["identity"].as_str().unwrap()).unwrap();
        let pem = vector_text(&format!("keys/{}", entry["publicKey"].as_str().unwrap()));
        let key = PublicKey::from_pem(&pem).unwrap();
        responder.publish_key(
            &identity,
            entry["selector"].as_str().unwrap(),
            &key.to_base64(),
        );
    }
    responder
}

/// How to build a [`TestServer`].
pub struct TestOptions {
    /// Identities to host, each with the public key of the named vector key.
    pub hosted: Vec<(&'static str, &'static str)>,
    /// Per-connection idle timeout.
    pub idle_timeout: Duration,
    /// Time for one line from its first byte.
    pub line_timeout: Duration,
    /// Connections per IP address.
    pub max_connections_per_ip: usize,
    /// Longest line.
    pub max_line_bytes: usize,
    /// Connection cap.
    pub max_connections: usize,
    /// Trust policy.
    pub policy: TrustPolicy,
    /// How far `issuedAt` may be from the clock.
    pub clock: ClockPolicy,
    /// Extra middleware.
    pub middleware: Vec<Arc<dyn Middleware>>,
    /// Lifecycle hooks.
    pub lifecycle: Vec<Arc<dyn Lifecycle>>,
    /// The error callback.
    pub on_error: Option<ErrorCallback>,
    /// Trust and identity records in the reference's JSON files instead of the
    /// redb file (`STORAGE_TYPE=json`).
    pub json_records: Option<(JsonTrustStore, JsonIdentityStore)>,
    /// Wraps the storage the server is given (to inject failures).
    pub wrap_storage: Option<StorageWrapper>,
    /// Agents may send: the server queues what they send through outbound
    /// delivery's originator (the worker itself does not run), each hosted
    /// domain's delegator published in DNS with the server key.
    pub agent_outbound: bool,
    /// How agents enroll, refresh and act.
    pub agents: btps::server::agent::AgentPolicy,
}

/// A function that wraps a server's storage in another (to inject failures).
pub type StorageWrapper = fn(Arc<dyn Storage>) -> Arc<dyn Storage>;

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            hosted: vec![("finance$client.test", "finance")],
            idle_timeout: Duration::from_secs(30),
            line_timeout: Duration::from_secs(20),
            max_connections_per_ip: 4096,
            max_line_bytes: 1 << 20,
            max_connections: 2048,
            policy: TrustPolicy::default(),
            clock: ClockPolicy::default(),
            middleware: Vec::new(),
            lifecycle: Vec::new(),
            on_error: None,
            json_records: None,
            wrap_storage: None,
            agent_outbound: false,
            agents: btps::server::agent::AgentPolicy::default(),
        }
    }
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// The DNS server it resolves keys from.
    pub dns: Arc<DnsResponder>,
    /// Its database.
    pub store: RedbStore,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its server key.
    pub server_key: PublicKey,
    /// Its listener's counters and readiness.
    pub stats: Arc<btps::server::ListenerStats>,
    /// Its after-commit subscriptions.
    pub events: Events,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn config_for(data_dir: &Path) -> Config {
    let dir = data_dir.display().to_string();
    let env = move |name: &str| (name == "BTPS_DATA_DIR").then(|| dir.clone());
    Config::load(None, &env).unwrap()
}

/// Adds `identity` as a hosted identity whose current key (`btps1`) is the public
/// key of vector key `key_name`.
pub fn host(store: &RedbStore, identity: &str, key_name: &str) {
    let public = vector_key(key_name).public_key().to_pem() + "\n";
    let key = PublicKeyRecord {
        selector: "btps1".to_owned(),
        public_key: public,
        key_type: "rsa".to_owned(),
        version: "1.0.0".to_owned(),
        created_at: Timestamp::now(),
        source: None,
    };
    store
        .create_identity(IdentityRecord::new(identity, key, Timestamp::now()))
        .unwrap();
}

impl TestServer {
    /// Starts a server in a new temporary data directory.
    pub async fn start(options: TestOptions) -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut server = Self::start_in(&dir, Arc::new(vector_dns()), options).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (for restarts).
    pub async fn start_in(
        data_dir: &Path,
        dns: Arc<DnsResponder>,
        options: TestOptions,
    ) -> TestServer {
        let config = config_for(data_dir);
        let prepared = bootstrap::prepare(&config).unwrap();
        let store = RedbStore::open_dir(data_dir, &RedbOptions::default()).unwrap();
        for (identity, key) in &options.hosted {
            if store
                .read(|snapshot| snapshot.identity_by_name(identity))
                .unwrap()
                .is_none()
            {
                host(&store, identity, key);
            }
        }
        let resolver = HickoryTxtResolver::with_name_servers(
            &[dns.local_addr()],
            ResolverOptions {
                timeout: Duration::from_millis(500),
                attempts: 1,
            },
        );
        let resolver: Arc<dyn TxtResolver> = Arc::new(
            CachingResolver::new(resolver, CacheConfig::default())
                .with_observer(btps::metrics::dns_cache),
        );
        let keys: Arc<dyn KeySource> =
            Arc::new(DnsKeys::new(KeyDirectory::new(Arc::clone(&resolver))));
        let server_key = prepared.server_key.public_key().clone();
        let signing_key = Arc::new(prepared.server_key);
        let storage: Arc<dyn Storage> = match options.json_records {
            None => Arc::new(store.clone()),
            Some((trust, identities)) => Arc::new(JsonFilesStorage::new(
                trust,
                identities,
                Arc::new(store.clone()),
            )),
        };
        let storage = match options.wrap_storage {
            Some(wrap) => wrap(storage),
            None => storage,
        };
        let mut builder = Server::builder()
            .storage(storage)
            .server_key_shared(Arc::clone(&signing_key))
            .tls(prepared.tls)
            .key_source(keys)
            .trust_policy(options.policy)
            .agent_policy(options.agents)
            .clock_policy(options.clock)
            .listener_settings(ListenerSettings {
                connection: ConnectionLimits {
                    max_line_bytes: options.max_line_bytes,
                    idle_timeout: options.idle_timeout,
                    line_timeout: options.line_timeout,
                },
                handshake_timeout: Duration::from_secs(5),
                max_connections: options.max_connections,
                max_connections_per_ip: options.max_connections_per_ip,
                shutdown_grace: Duration::from_secs(5),
            });
        if options.agent_outbound {
            let config = config_for(data_dir);
            for (identity, _) in &options.hosted {
                let domain = Identity::parse(identity).unwrap().domain().to_owned();
                let delegator = config.lookup_signer(&domain);
                dns.publish_key(&delegator, "btps1", &server_key.to_base64());
                dns.publish_host(&domain, "127.0.0.1:1", "btps1");
            }
            let originator = btps::delivery::Originator::new(
                Arc::clone(&signing_key),
                "btps1",
                Arc::new(config),
                Some(KeyDirectory::new(Arc::clone(&resolver))),
            );
            builder = builder.agent_outbound(Arc::new(btps::delivery::Outbound {
                originator: Arc::new(originator),
                policy: TrustPolicy::default(),
                wake: Arc::new(tokio::sync::Notify::new()),
            }));
        }
        for hook in options.middleware {
            builder = builder.middleware(hook);
        }
        for hooks in options.lifecycle {
            builder = builder.lifecycle(hooks);
        }
        if let Some(callback) = options.on_error {
            builder = builder.on_error(move |event| callback(event));
        }
        let server = builder.build().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stats = server.stats();
        let events = server.events();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            address,
            dns,
            store,
            data_dir: data_dir.to_owned(),
            server_key,
            stats,
            events,
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new client connection.
    pub async fn client(&self) -> BtpsClient {
        let options = ClientOptions {
            insecure: true,
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        BtpsClient::connect("127.0.0.1", self.address.port(), &options)
            .await
            .unwrap()
    }

    /// Sends one line on a new connection and returns the parsed response.
    pub async fn send(&self, line: &str) -> ServerResponse {
        let mut client = self.client().await;
        client.request(line).await.unwrap()
    }

    /// Stops the server gracefully and waits for it; returns the temporary
    /// directory so the data survives for a restart.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self._temp.take()
    }
}

/// A signed transporter artifact line from `from` (signed with vector key `key`).
pub fn artifact(kind: TransporterType, from: &str, key: &str, to: &str, document: &str) -> String {
    artifact_with_id(kind, from, key, to, document, None)
}

/// Same, with a chosen id.
pub fn artifact_with_id(
    kind: TransporterType,
    from: &str,
    key: &str,
    to: &str,
    document: &str,
    id: Option<&str>,
) -> String {
    artifact_issued_at(kind, from, key, to, document, id, None)
}

/// Same, with a chosen id and `issuedAt` (now when `None`).
pub fn artifact_issued_at(
    kind: TransporterType,
    from: &str,
    key: &str,
    to: &str,
    document: &str,
    id: Option<&str>,
    issued_at: Option<&str>,
) -> String {
    let draft = TransporterDraft {
        kind,
        from: Identity::parse(from).unwrap(),
        to: Identity::parse(to).unwrap(),
        selector: "btps1".to_owned(),
        document: json::parse(document).unwrap(),
        id: id.map(str::to_owned),
        issued_at: issued_at.map(str::to_owned),
    };
    signing::build_transporter(draft, &vector_key(key), None)
        .unwrap()
        .to_canonical()
}

/// A trust record from `sender` to `receiver` with `status`, holding the public key of
/// vector key `key` (or no key yet); privacy `mixed`, decided by "test".
pub fn trust_record(
    sender: &str,
    receiver: &str,
    status: TrustStatus,
    key: Option<&str>,
) -> NewTrustRecord {
    let (public_key_base64, public_key_fingerprint) = match key {
        Some(name) => {
            let key = vector_key(name);
            (
                key.public_key().to_base64(),
                key.public_key().fingerprint().to_owned(),
            )
        }
        None => (String::new(), String::new()),
    };
    NewTrustRecord {
        sender_id: sender.into(),
        receiver_id: receiver.into(),
        status,
        created_at: Timestamp::now(),
        decided_by: "test".into(),
        decided_at: Timestamp::now(),
        expires_at: None,
        public_key_base64,
        public_key_fingerprint,
        key_history: vec![],
        privacy_type: PrivacyType::Mixed,
        retry_after_date: None,
        metadata: None,
    }
}

/// A plain trust request document.
pub const TRUST_REQUEST: &str = r#"{"id":"req-1","name":"Vendor Ltd","email":"billing@vendor.test","reason":"Monthly invoices","phone":"+61 2 5550 0100"}"#;

/// A plain invoice document.
pub fn invoice(id: &str) -> String {
    format!(
        r#"{{"title":"Invoice {id}","id":"{id}","issuedAt":"2025-02-01T00:00:00.000Z","status":"unpaid","totalAmount":{{"value":1500.5,"currency":"AUD"}},"lineItems":{{"columns":["Description","Amount"],"rows":[{{"Description":"Consulting","Amount":1500.5}}]}}}}"#
    )
}

/// The object of a response line, for assertions on raw members.
pub fn object(response: &ServerResponse) -> &Object {
    &response.raw
}

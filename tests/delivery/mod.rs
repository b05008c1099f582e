//! Outbound delivery between real appliances: each a `btps serve` process with its
//! own data directory, TLS certificates issued by a test CA (which each trusts
//! through `delivery.ca_file`), and one DNS responder on loopback publishing both
//! domains' host records and delegator keys.

mod bench;
mod failures;
mod handshake;
mod reference;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use btps::admin::operations::{AdminRequest, AdminResponse, SendRequest};
use btps::admin::socket::AdminClient;
use btps::identity::Identity;
use btps::identity::responder::DnsResponder;
use btps::store::{RedbOptions, RedbStore};
use serde_json::Value;

use crate::util::server::{host, vector_key};

pub(crate) const VENDOR: &str = "billing$vendor.test";
pub(crate) const CLIENT: &str = "finance$client.test";

/// A test CA and the file it is written to.
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(crate) pem_path: PathBuf,
}

impl TestCa {
    pub(crate) fn new(dir: &Path) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "btps test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, certificate.pem()).unwrap();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem_path,
        }
    }

    /// A certificate for 127.0.0.1 and `localhost`: (certificate PEM, key PEM).
    pub(crate) fn leaf(&self) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "btps test server");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

/// A free loopback port (bound, then released for the server to take).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn write_private(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// One appliance's data directory, DNS records and process.
pub(crate) struct Appliance {
    pub(crate) domain: &'static str,
    pub(crate) data: PathBuf,
    pub(crate) port: u16,
    /// Every domain it hosts (`BTPS_HOSTED_DOMAINS`).
    hosted: Vec<String>,
    server_key: &'static str,
    ca_file: PathBuf,
    dns: SocketAddr,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    /// The HTTP endpoint's address, when it is on (`BTPS_HTTP_LISTEN`).
    pub(crate) http: Option<SocketAddr>,
}

impl Appliance {
    /// Prepares `data` for `domain`: the hosted `identity` (key `identity_key` of the
    /// vectors), the server key `server_key` (published in DNS as the domain's
    /// delegator `admin$domain`), a CA-issued TLS certificate, and the host record.
    pub(crate) fn prepare(
        world: &World,
        domain: &'static str,
        identities: &[(&str, &str)],
        server_key: &'static str,
    ) -> Appliance {
        let data = world.dir.join(domain);
        let store = RedbStore::open_dir(&data, &RedbOptions::default()).unwrap();
        for (identity, key) in identities {
            host(&store, identity, key);
            // The identity's own key record, for senders that encrypt to it.
            world.dns.publish_key(
                &Identity::parse(identity).unwrap(),
                "btps1",
                &vector_key(key).public_key().to_base64(),
            );
        }
        drop(store);
        let key = vector_key(server_key);
        write_private(&data.join("keys/server.key.pem"), &key.to_pkcs8_pem());
        write_private(
            &data.join("keys/server.pub.pem"),
            &key.public_key().to_pem(),
        );
        let (certificate, tls_key) = world.ca.leaf();
        write_private(&data.join("tls/cert.pem"), &certificate);
        write_private(&data.join("tls/key.pem"), &tls_key);
        let port = free_port();
        world
            .dns
            .publish_host(domain, &format!("127.0.0.1:{port}"), "btps1");
        world.dns.publish_key(
            &Identity::parse(&format!("admin${domain}")).unwrap(),
            "btps1",
            &key.public_key().to_base64(),
        );
        Appliance {
            domain,
            data,
            port,
            hosted: vec![domain.to_owned()],
            server_key,
            ca_file: world.ca.pem_path.clone(),
            dns: world.dns.local_addr(),
            extra_env: vec![
                // Short retries, so that tests see several attempts.
                (
                    "BTPS_DELIVERY_RETRY_SCHEDULE_MS".to_owned(),
                    "300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300,300".to_owned(),
                ),
            ],
            child: None,
            http: None,
        }
    }

    /// Sets an environment variable of the next starts.
    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        self.extra_env.retain(|(existing, _)| existing != name);
        self.extra_env.push((name.to_owned(), value.to_owned()));
    }

    /// Hosts `domain` as well (its host record names this appliance, its delegator
    /// key is the server key) and `identity` of it, with the vector key `key`.
    pub(crate) fn also_host(&mut self, world: &World, domain: &str, identity: &str, key: &str) {
        let store = RedbStore::open_dir(&self.data, &RedbOptions::default()).unwrap();
        host(&store, identity, key);
        drop(store);
        world
            .dns
            .publish_host(domain, &format!("127.0.0.1:{}", self.port), "btps1");
        world.dns.publish_key(
            &Identity::parse(&format!("admin${domain}")).unwrap(),
            "btps1",
            &vector_key(self.server_key).public_key().to_base64(),
        );
        self.hosted.push(domain.to_owned());
    }

    /// Starts `btps serve` and waits until it listens.
    pub(crate) fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.domain);
        let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
        command
            .args(["serve", "--data-dir"])
            .arg(&self.data)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--dns-server", &self.dns.to_string()])
            .current_dir(self.data.parent().unwrap())
            .env("RUST_LOG", "warn")
            .env_remove("BTPS_DATA_DIR")
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_ADMIN_SOCKET")
            .env("BTPS_HTTP_LISTEN", "off")
            .env("BTPS_HOSTED_DOMAINS", self.hosted.join(","))
            .env("BTPS_DELIVERY_CA_FILE", &self.ca_file)
            // Negative DNS answers are not kept: tests publish records as they go.
            .env("BTPS_DNS_CACHE_NEGATIVE_TTL_MS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("btps serve of {} exited before listening", self.domain))
                .unwrap();
            if let Some(address) = line.strip_prefix("btps http endpoint on http://") {
                self.http = Some(address.trim().parse().unwrap());
            }
            if line.starts_with("btps listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// SIGTERM and a clean exit.
    pub(crate) fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = crate::util::sigterm_and_wait(&mut child, Duration::from_secs(20))
            .expect("btps serve stops within 20 s of SIGTERM");
        assert!(status.success(), "btps serve exited with {status}");
    }

    /// SIGKILL: no clean stop.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `GET /metrics` of the running server (its HTTP endpoint must be on).
    pub(crate) fn metrics(&self) -> Vec<crate::http::Sample> {
        use std::io::{Read, Write};
        let address = self.http.expect("the HTTP endpoint is on");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: btps\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        crate::http::parse_prometheus(body)
    }

    /// Runs the CLI against this appliance's data directory.
    pub(crate) fn btps(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_btps"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .current_dir(self.data.parent().unwrap())
            .env_remove("BTPS_DATA_DIR")
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_ADMIN_SOCKET")
            .output()
            .unwrap()
    }

    /// Runs the CLI with `--json`, which must succeed, and parses its output.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.btps(&all);
        assert!(
            output.status.success(),
            "btps {args:?} on {}: exit {:?}\nstdout: {}\nstderr: {}",
            self.domain,
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The running server's admin socket.
    pub(crate) fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.data.join("admin.sock")).unwrap()
    }

    /// Queues a BTPS_DOC from `from` to `to` with `title` through the admin socket.
    pub(crate) fn queue_invoice(
        &self,
        admin: &mut AdminClient,
        from: &str,
        to: &str,
        title: &str,
    ) -> Value {
        let document = invoice_document(title);
        let response = admin
            .call(&AdminRequest::Send(SendRequest {
                from: from.to_owned(),
                to: to.to_owned(),
                kind: "BTPS_DOC".to_owned(),
                document: Some(document),
                encrypt: false,
                artifact: None,
            }))
            .unwrap();
        let AdminResponse::OutboxEntry { entry } = response else {
            panic!("unexpected answer {response:?}");
        };
        entry
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain invoice document titled `title`.
pub(crate) fn invoice_document(title: &str) -> String {
    format!(
        r#"{{"title":"{title}","id":"{title}","issuedAt":"2025-01-01T00:00:00.000Z","status":"unpaid","totalAmount":{{"value":10,"currency":"USD"}},"lineItems":{{"columns":["Description","Amount"],"rows":[{{"Description":"Widget","Amount":10}}]}}}}"#
    )
}

/// The temporary directory, the CA and the DNS responder the appliances share.
pub(crate) struct World {
    pub(crate) dir: PathBuf,
    pub(crate) ca: TestCa,
    pub(crate) dns: DnsResponder,
    _temp: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let ca = TestCa::new(&dir);
        let dns = DnsResponder::start("127.0.0.1:0".parse().unwrap()).unwrap();
        World {
            dir,
            ca,
            dns,
            _temp: temp,
        }
    }

    /// The vendor (billing$vendor.test) and client (finance$client.test) appliances,
    /// prepared, not started.
    pub(crate) fn pair(&self) -> (Appliance, Appliance) {
        let vendor =
            Appliance::prepare(self, "vendor.test", &[(VENDOR, "billing")], "admin-vendor");
        let client = Appliance::prepare(self, "client.test", &[(CLIENT, "finance")], "server");
        (vendor, client)
    }
}

/// Polls `check` every 50 ms until it returns `Some`, at most `limit`.
pub(crate) fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! `btps verify`: checks one artifact (or signed server response) the way a receiving
//! server (or a client) does.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::identity::dns::{
    CacheConfig, CachingResolver, HickoryTxtResolver, KeyDirectory, ResolverOptions, TxtResolver,
};
use btps::protocol::json::Value;
use btps::protocol::response::{ServerResponse, parse_response};
use btps::protocol::{self, Artifact, ProtocolError};
use btps::signing::{self, DnsKeys, KeySource, Layered, StaticKeys, VerifiedSigner};

/// Arguments of `btps verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// A file holding one artifact line, one server response line, or a JSON object
    /// whose `artifact` member is such a line.
    file: PathBuf,
    /// The signer's public key (SPKI PEM), instead of looking it up in DNS; for an
    /// agent artifact, the key of its agent record.
    #[arg(long)]
    key: Option<PathBuf>,
    /// DNS server(s) to ask for keys (HOST:PORT); the system's resolvers by default.
    #[arg(long = "dns-server")]
    dns_servers: Vec<SocketAddr>,
    /// Private key (PEM) to decrypt the document with after verification.
    #[arg(long)]
    decrypt_key: Option<PathBuf>,
}

/// The outcome of a check: a summary line, and the decrypted document if asked for.
struct Verified {
    summary: String,
    document: Option<Value>,
}

pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let text = fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let line = artifact_line(&text);
    let key = match &args.key {
        Some(path) => Some(read_public_key(path)?),
        None => None,
    };
    let decrypt_key = match &args.decrypt_key {
        Some(path) => {
            let pem =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(PrivateKey::from_pem(&pem).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let dns = dns_keys(&args.dns_servers)?;
        Ok::<_, anyhow::Error>(check(&line, key, dns, decrypt_key.as_ref()).await)
    })?;
    match outcome {
        Ok(verified) => {
            println!("{}", verified.summary);
            if let Some(document) = verified.document {
                println!("{}", document.to_canonical());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let reason = error
                .reason()
                .map(|reason| format!(" [{reason}]"))
                .unwrap_or_default();
            println!(
                "invalid: {}: {}{reason}: {}",
                error.code.on_the_wire().code(),
                error.wire_message().trim_start(),
                error.detail
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The line to check: the file itself, or its `artifact` member (the vectors' form).
fn artifact_line(text: &str) -> String {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(serde_json::Value::String(line)) = object.get("artifact")
    {
        return line.clone();
    }
    text.trim_end_matches(['\r', '\n']).to_owned()
}

fn read_public_key(path: &PathBuf) -> anyhow::Result<PublicKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PublicKey::from_pem(&pem).with_context(|| path.display().to_string())
}

fn dns_keys(servers: &[SocketAddr]) -> anyhow::Result<Arc<dyn KeySource>> {
    let resolver = if servers.is_empty() {
        HickoryTxtResolver::from_system_config(ResolverOptions::default())
            .context("reading the system DNS configuration (give --dns-server)")?
    } else {
        HickoryTxtResolver::with_name_servers(servers, ResolverOptions::default())
    };
    let resolver: Arc<dyn TxtResolver> =
        Arc::new(CachingResolver::new(resolver, CacheConfig::default()));
    Ok(Arc::new(DnsKeys::new(KeyDirectory::new(resolver))))
}

/// `--key` stands for the signer's key; everything else comes from DNS.
fn with_signer_key(
    signer: Option<(&Identity, &str)>,
    key: Option<PublicKey>,
    dns: Arc<dyn KeySource>,
) -> Arc<dyn KeySource> {
    match (signer, key) {
        (Some((identity, selector)), Some(key)) => {
            let mut fixed = StaticKeys::new();
            fixed.insert(identity, selector, key);
            Arc::new(Layered::new(Arc::new(fixed), dns))
        }
        _ => dns,
    }
}

async fn check(
    line: &str,
    key: Option<PublicKey>,
    dns: Arc<dyn KeySource>,
    decrypt_key: Option<&PrivateKey>,
) -> Result<Verified, ProtocolError> {
    // A server response has a `status`; an artifact never does.
    if let Ok(Value::Object(object)) = protocol::json::parse(line)
        && object.contains_key("status")
    {
        let response = parse_response(line)?;
        return check_response(&response, key, dns).await;
    }
    let artifact = protocol::parse_line(line.as_bytes())?
        .ok_or_else(|| ProtocolError::validation("the file holds a blank line"))?;
    match artifact {
        Artifact::Transporter(artifact) => {
            let keys = with_signer_key(Some((&artifact.from, &artifact.selector)), key, dns);
            let signer = signing::verify_transporter(&artifact, keys.as_ref()).await?;
            let signed_by = match signer {
                VerifiedSigner::Sender(key) => format!(
                    "signed by {} ({}, {})",
                    artifact.from,
                    artifact.selector,
                    key.fingerprint()
                ),
                VerifiedSigner::Delegated {
                    agent,
                    delegator,
                    attestor,
                    ..
                } => format!(
                    "signed by agent {} ({}), delegated by {delegator}{}",
                    artifact
                        .delegation
                        .as_ref()
                        .map_or("", |delegation| delegation.agent_id.as_str()),
                    agent.fingerprint(),
                    attestor
                        .map(|attestor| format!(", attested by {attestor}"))
                        .unwrap_or_default()
                ),
            };
            let document = match (&artifact.encryption, decrypt_key) {
                (Some(encryption), Some(private)) => {
                    let ciphertext = artifact.document().as_str().unwrap_or_default();
                    Some(signing::decrypt_document(ciphertext, encryption, private)?)
                }
                (None, Some(_)) => Some(artifact.document().clone()),
                _ => None,
            };
            let encrypted = if artifact.encryption.is_some() {
                ", encrypted"
            } else {
                ""
            };
            Ok(Verified {
                summary: format!(
                    "valid: {} {} from {} to {}{encrypted}, {signed_by}",
                    artifact.kind, artifact.id, artifact.from, artifact.to
                ),
                document,
            })
        }
        Artifact::Agent(artifact) => {
            let used = signing::verify_agent(&artifact, key.as_ref())?;
            Ok(Verified {
                summary: format!(
                    "valid: agent {} {} by agent {} for {}, key {}",
                    artifact.action,
                    artifact.id,
                    artifact.agent_id,
                    artifact.to,
                    used.fingerprint()
                ),
                document: None,
            })
        }
        Artifact::IdentityLookup(request) => Ok(Verified {
            summary: format!(
                "valid: identity lookup {} for {} (unsigned)",
                request.id, request.identity
            ),
            document: None,
        }),
        Artifact::Control(control) => Ok(Verified {
            summary: format!(
                "valid: control {} {} (unsigned)",
                control.action, control.id
            ),
            document: None,
        }),
    }
}

async fn check_response(
    response: &ServerResponse,
    key: Option<PublicKey>,
    dns: Arc<dyn KeySource>,
) -> Result<Verified, ProtocolError> {
    let Some(signer) = &response.signer else {
        return Ok(Verified {
            summary: format!(
                "valid: unsigned {} response{} ({})",
                if response.ok { "success" } else { "error" },
                response
                    .req_id
                    .as_ref()
                    .map(|id| format!(" to {id}"))
                    .unwrap_or_default(),
                response.message.as_deref().unwrap_or("")
            ),
            document: None,
        });
    };
    let keys = with_signer_key(Some((&signer.signed_by, &signer.selector)), key, dns);
    let used = signing::verify_response(response, keys.as_ref()).await?;
    Ok(Verified {
        summary: format!(
            "valid: response{} signed by {} ({}, {})",
            response
                .req_id
                .as_ref()
                .map(|id| format!(" to {id}"))
                .unwrap_or_default(),
            signer.signed_by,
            signer.selector,
            used.fingerprint()
        ),
        document: None,
    })
}

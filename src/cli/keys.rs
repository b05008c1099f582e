//! `btps keygen` and `btps fingerprint`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use btps::crypto::{PrivateKey, PublicKey};
use btps::identity::Identity;
use btps::identity::dns::key_record_text;
use btps::server::permissions;

use super::store::{DataDirArg, Missing, create_key_directory};

/// Arguments of `btps keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Directory to write NAME.key.pem (PKCS#8, mode 0600) and NAME.pub.pem (SPKI)
    /// into (created 0700; default: the data directory's keys/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The data directory whose keys/ receives the files when --out is not given.
    #[command(flatten)]
    data: DataDirArg,
    /// Create the data directory (mode 0700) if it does not exist (without --out).
    #[arg(long)]
    create: bool,
    /// Base name of the key files.
    #[arg(long)]
    name: String,
    /// RSA modulus size. Keys published in DNS for reference peers should be 2048-bit.
    #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
    bits: usize,
    /// The identity the key is for, to print the full DNS record name.
    #[arg(long)]
    identity: Option<Identity>,
    /// The DNS selector the key is published under.
    #[arg(long, default_value = "btps1")]
    selector: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `btps fingerprint`.
#[derive(Debug, clap::Args)]
pub(crate) struct FingerprintArgs {
    /// An SPKI public key PEM file ("-----BEGIN PUBLIC KEY-----").
    public_key: PathBuf,
}

fn parse_bits(text: &str) -> Result<usize, String> {
    match text {
        "2048" => Ok(2048),
        "3072" => Ok(3072),
        "4096" => Ok(4096),
        _ => Err("RSA key size must be 2048, 3072 or 4096".to_owned()),
    }
}

/// Creates the directory `keygen` writes into and returns it: `--out` (0700), else
/// the data directory's `keys/` (the data directory must exist, or `--create`
/// creates it; see [`create_key_directory`]).
fn output_directory(args: &KeygenArgs) -> anyhow::Result<PathBuf> {
    if let Some(out) = &args.out {
        permissions::create_private_dir(out)
            .with_context(|| format!("creating {}", out.display()))?;
        return Ok(out.clone());
    }
    let config = args.data.config()?;
    args.data
        .existing_data_dir(&config, Missing::CreateIf(args.create))
        .context("no --out DIR for the key files")?;
    let keys = config.data_dir.join("keys");
    create_key_directory(&keys, &config.data_dir)?;
    Ok(keys)
}

pub(crate) fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let out = output_directory(args)?;
    let private_path = out.join(format!("{}.key.pem", args.name));
    let public_path = out.join(format!("{}.pub.pem", args.name));
    for path in [&private_path, &public_path] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            );
        }
    }
    let key = PrivateKey::generate(args.bits).context("generating the key pair")?;
    write_private(&private_path, &key.to_pkcs8_pem())?;
    let mut public_pem = key.public_key().to_pem();
    public_pem.push('\n');
    fs::write(&public_path, public_pem)
        .with_context(|| format!("writing {}", public_path.display()))?;

    let public = key.public_key();
    let record_name = match &args.identity {
        Some(identity) => identity.key_record_name(&args.selector),
        None => format!("{}._btps.identity.<account>.<domain>", args.selector),
    };
    if args.json {
        let report = serde_json::json!({
            "privateKey": private_path.display().to_string(),
            "publicKey": public_path.display().to_string(),
            "fingerprint": public.fingerprint(),
            "bits": public.bits(),
            "dnsRecord": { "name": record_name, "type": "TXT", "value": key_record_text(&public.to_base64()) },
        });
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("private key: {} (keep it secret)", private_path.display());
    println!("public key:  {}", public_path.display());
    println!("fingerprint: {}", public.fingerprint());
    println!("DNS TXT record to publish:");
    println!(
        "{record_name}. IN TXT \"{}\"",
        key_record_text(&public.to_base64())
    );
    if public.to_base64().ends_with('=') {
        println!(
            "note: this key's base64 is padded; reference peers cannot read padded keys from DNS (use 2048 bits for DNS)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a private key readable by its owner only.
pub(crate) fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

pub(crate) fn fingerprint(args: &FingerprintArgs) -> anyhow::Result<ExitCode> {
    let pem = fs::read_to_string(&args.public_key)
        .with_context(|| format!("reading {}", args.public_key.display()))?;
    let key =
        PublicKey::from_pem(&pem).with_context(|| format!("{}", args.public_key.display()))?;
    println!("{}", key.fingerprint());
    Ok(ExitCode::SUCCESS)
}
